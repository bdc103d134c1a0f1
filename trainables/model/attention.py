"""Causal self-attention with normal heads (RoPE) and nano heads (no RoPE), softmax or softmax1,
on three interchangeable backends: PyTorch SDPA (default), flash-attn (CUDA), and a manual one
that writes the math out (the reference the other two are tested against)."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPTConfig, nanohead_split


def norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm without a learned gain (nanochat), eps = the dtype's machine epsilon (F.rms_norm's default)."""
    if x.dtype == torch.float32 and x.device.type == "cpu" and not torch.compiler.is_compiling():
        return _RMSNorm.apply(x)
    return F.rms_norm(x, (x.size(-1),))


class _RMSNorm(torch.autograd.Function):
    """F.rms_norm with a hand-written backward, for fp32 eager on a CPU. There F.rms_norm is composite
    (pow, mean, add, rsqrt, mul, and autograd through each): about 4x the time of one fused LayerNorm,
    and the 6+ norms per block cost this GPT ~10% of a training step against nanoGPT (benchmarks/bench_model.py).
    Here: one reduction and one multiply forward; dx = rstd * (g - y * mean(g * y)) backward.
    Under torch.compile, in bf16 and on GPUs F.rms_norm runs (inductor fuses it; CUDA has a fused kernel)."""

    @staticmethod
    def forward(ctx, x):
        d = x.size(-1)
        ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(d)
        rstd = ms.add_(torch.finfo(x.dtype).eps).rsqrt_()
        y = x * rstd
        ctx.save_for_backward(y, rstd)
        return y

    @staticmethod
    def backward(ctx, g):
        y, rstd = ctx.saved_tensors
        mean_gy = torch.linalg.vecdot(g, y, dim=-1).unsqueeze_(-1).div_(y.size(-1))
        return torch.addcmul(g, y, mean_gy, value=-1).mul_(rstd)


def softmax1(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """exp(x_i) / (1 + sum_j exp(x_j)): softmax with an implicit extra logit fixed at 0.

    Stable for large inputs: shift by m = max(max_j x_j, 0), so both exp(x - m) and the implicit
    term exp(-m) stay <= 1. Entries at -inf (masked) contribute 0.
    """
    m = x.amax(dim=dim, keepdim=True).clamp(min=0).detach()
    e = torch.exp(x - m)
    return e / (torch.exp(-m) + e.sum(dim=dim, keepdim=True))


def rotary_tables(head_dim: int, seq_len: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """[seq_len, head_dim] tables for apply_rotary: cos(a) twice, and sin(a) then -sin(a), with a the
    angle of pair (i, i + head_dim/2) at each position."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([cos, cos], dim=-1), torch.cat([sin, -sin], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, T, H, D]; cos/sin: [T, D] from rotary_tables. Rotates each pair (x_i, x_{i+D/2}) by its angle:
    (x1 cos + x2 sin, x2 cos - x1 sin), written as x * cos + swap_halves(x) * sin so that it costs one copy
    and three elementwise ops (the signs live in the sin table)."""
    d = x.size(-1) // 2
    cos, sin = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)
    if (
        x.device.type == "cpu" and torch.compiler.is_compiling()
    ):  # per half: inductor fuses it into one pass, not a copy and a pass
        x1, x2, c, s = x[..., :d], x[..., d:], cos[..., :d], sin[..., :d]
        return torch.cat([x1 * c + x2 * s, x2 * c - x1 * s], dim=-1)
    swapped = torch.cat([x[..., d:], x[..., :d]], dim=-1)
    return torch.addcmul(x * cos, swapped, sin)


# SDPA's fused CUDA kernels (flash, memory-efficient) take head dims that are multiples of 8 (bf16/fp16); any
# other dim runs its math kernel, which stores the B x H x T x T probabilities of every layer for backward.
SDPA_HEAD_DIM_MULTIPLE = 8


def attend(
    q, k, v, *, softmax1_: bool, backend: str, dropout_p: float = 0.0, pad_head_dim: bool | None = None
) -> torch.Tensor:
    """Causal attention. q: [B, H, Tq, D]; k, v: [B, Hkv, Tk, D] with H a multiple of Hkv (GQA).
    The Tq queries are the last Tq positions of the Tk keys (Tq < Tk when decoding with a KV cache).
    pad_head_dim (sdpa): zero-pad D to a multiple of 8 so a fused kernel runs; None pads on CUDA only (a CPU's
    fused kernel takes any D, and padding would only add work there)."""
    if backend == "manual":
        return _attend_manual(q, k, v, softmax1_, dropout_p)
    if softmax1_:
        # softmax1 == softmax over the keys plus one extra key whose logit is 0 and value is 0.
        # A zero key gives exactly that (q . 0 = 0). It must be visible to every query, so it goes at
        # position 0 -- and a zero query goes there too: prepending a key alone under the causal mask
        # (top-left aligned in SDPA for Tq == Tk) would shift every row by one and leak the next token.
        # With both padded, query i+1 sees keys 0..i+1 = the null key + the original 0..i. Row 0 is dropped.
        pad = lambda t: F.pad(t, (0, 0, 1, 0))
        return attend(
            pad(q), pad(k), pad(v), softmax1_=False, backend=backend, dropout_p=dropout_p, pad_head_dim=pad_head_dim
        )[:, :, 1:]
    if backend == "flash":
        return _attend_flash(q, k, v, dropout_p)
    d = q.size(-1)
    d_pad = (-d) % SDPA_HEAD_DIM_MULTIPLE if (q.is_cuda if pad_head_dim is None else pad_head_dim) else 0
    if d_pad:  # zero columns change no q.k and add output columns of zeros (sliced off); the scale stays 1/sqrt(d)
        q, k, v = (F.pad(t, (0, d_pad)) for t in (q, k, v))
    Tq, Tk = q.size(2), k.size(2)
    kw = dict(dropout_p=dropout_p, enable_gqa=q.size(1) != k.size(1), scale=1.0 / math.sqrt(d))
    if Tq == Tk:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, **kw)
    else:
        mask = None if Tq == 1 else torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kw)
    return y[..., :d] if d_pad else y


def causal_probs(q, k, softmax1_: bool) -> torch.Tensor:
    """Causal attention probabilities [B, H, Tq, Tk], written out: the manual backend's, and what the probes
    inspect. Shapes as attend(); query head h uses kv head h // (H / Hkv) (GQA)."""
    k = k.repeat_interleave(q.size(1) // k.size(1), dim=1)
    Tq, Tk = q.size(2), k.size(2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    visible = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)
    scores = scores.masked_fill(~visible, float("-inf"))
    return softmax1(scores, dim=-1) if softmax1_ else torch.softmax(scores, dim=-1)


def _attend_manual(q, k, v, softmax1_: bool, dropout_p: float) -> torch.Tensor:
    weights = F.dropout(causal_probs(q, k, softmax1_), p=dropout_p)
    return weights @ v.repeat_interleave(q.size(1) // v.size(1), dim=1)


def flash_attn_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def _attend_flash(q, k, v, dropout_p: float) -> torch.Tensor:
    from flash_attn import flash_attn_func

    # flash-attn wants [B, T, H, D], fp16/bf16, and D a multiple of 8: pad tiny (nano) heads with zeros,
    # which changes neither q.k nor the output's first D columns, and keep the true 1/sqrt(D) scale.
    d = q.size(-1)
    d_pad = (-d) % 8
    dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    q, k, v = (F.pad(t, (0, d_pad)).transpose(1, 2).to(dtype) for t in (q, k, v))
    out = flash_attn_func(q, k, v, dropout_p=dropout_p, softmax_scale=1.0 / math.sqrt(d), causal=True)
    return out[..., :d].transpose(1, 2)


class CausalSelfAttention(nn.Module):
    """Normal heads first, then nano heads, in the q/k/v/proj layouts; one shared output projection."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.split = s = nanohead_split(cfg)
        kv_width = s.n_kv_normal * s.normal_dim + s.n_kv_nano * s.nano_dim
        self.c_q = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.c_k = nn.Linear(cfg.n_embd, kv_width, bias=False)
        self.c_v = nn.Linear(cfg.n_embd, kv_width, bias=False)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def _heads(self, t: torch.Tensor, n_normal: int, n_nano: int):
        """[B, T, width] -> (normal [B, T, n_normal, normal_dim], nano [B, T, n_nano, nano_dim])."""
        s = self.split
        w = n_normal * s.normal_dim
        return t[..., :w].unflatten(-1, (n_normal, s.normal_dim)), t[..., w:].unflatten(-1, (n_nano, s.nano_dim))

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> dict[str, tuple]:
        """x [B, T, C] -> {"normal": (q, k, v), "nano": (q, k, v)}, each [B, T, heads, head_dim], with RoPE
        (normal heads only) and QK norm applied: what attention sees. A kind with no heads has 0 heads."""
        s = self.split
        compiled_cpu = x.device.type == "cpu" and torch.compiler.is_compiling()
        if compiled_cpu:  # one matmul for q, k and v (nanoGPT's c_attn): on a CPU three narrow ones are slower
            w = torch.cat([self.c_q.weight, self.c_k.weight, self.c_v.weight])
            q, k, v = F.linear(x, w).split(
                [self.c_q.out_features, self.c_k.out_features, self.c_v.out_features], dim=-1
            )
        else:
            q, k, v = self.c_q(x), self.c_k(x), self.c_v(x)
        q_normal, q_nano = self._heads(q, s.n_normal, s.n_nano)
        k_normal, k_nano = self._heads(k, s.n_kv_normal, s.n_kv_nano)
        v_normal, v_nano = self._heads(v, s.n_kv_normal, s.n_kv_nano)
        # RoPE on normal heads only: nano heads are position-free by design (the note's hypothesis).
        if (
            self.cfg.qk_norm and compiled_cpu
        ):  # norm first, which inductor fuses better: RoPE, a rotation, keeps the norm
            q_normal, k_normal, q_nano, k_nano = map(norm, (q_normal, k_normal, q_nano, k_nano))
            q_normal, k_normal = apply_rotary(q_normal, cos, sin), apply_rotary(k_normal, cos, sin)
        else:
            q_normal, k_normal = apply_rotary(q_normal, cos, sin), apply_rotary(k_normal, cos, sin)
            if self.cfg.qk_norm:
                # Note: QK norm caps a d-dim head's logits at |q||k|/sqrt(d) = sqrt(d): about 1.7 for a 3-dim head.
                q_normal, k_normal, q_nano, k_nano = map(norm, (q_normal, k_normal, q_nano, k_nano))
        return {"normal": (q_normal, k_normal, v_normal), "nano": (q_nano, k_nano, v_nano)}

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: dict | None = None):
        """cos/sin cover the positions of x. cache (generation): this layer's dict of past keys/values."""
        B, T, C = x.shape
        dropout_p = self.cfg.dropout if self.training else 0.0
        outputs = []
        for kind, (q, k, v) in self.qkv(x, cos, sin).items():
            if q.size(2) == 0:
                continue
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
            if cache is not None:
                if kind in cache:
                    k = torch.cat([cache[kind][0], k], dim=2)
                    v = torch.cat([cache[kind][1], v], dim=2)
                cache[kind] = (k, v)
            y = attend(q, k, v, softmax1_=self.cfg.softmax1, backend=self.cfg.attn_backend, dropout_p=dropout_p)
            outputs.append(y.transpose(1, 2).reshape(B, T, -1))
        y = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
        return self.resid_dropout(self.c_proj(y))
