"""A nanochat-style decoder-only transformer that carries every architecture the studies compare.

Pre-norm blocks (RMSNorm without gain), rotary embeddings, QK norm, relu^2 MLP, no biases,
untied embeddings by default, logit softcap, GQA. Token mixing per block is causal self-attention
(normal + nano heads, softmax or softmax1), the multi-head Toeplitz mixer, or a mixer a user registered
(mixers.register_mixer, whose docstring is the contract it meets).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import CausalSelfAttention, flash_attn_available, norm, rotary_tables
from .config import GPTConfig, nanohead_split
from .mixers import mixer_class, mixer_has_cache
from .toeplitz import ToeplitzMixer


class _ReluSquared(torch.autograd.Function):
    """relu(x)^2 with a backward of one multiply (2 relu(x) g): autograd through relu then square costs a
    CPU step ~5 passes more over the [B, T, 4C] activations, enough to matter against nanoGPT's fused GELU."""

    @staticmethod
    def forward(ctx, x):
        r = F.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, g):
        (r,) = ctx.saved_tensors
        return (r + r).mul_(g)


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    if torch.compiler.is_compiling():  # inductor fuses the plain form into one kernel
        return F.relu(x).square()
    return _ReluSquared.apply(x)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=False)
        self.c_proj = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(relu_squared(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.kind = cfg.mixer
        if cfg.mixer == "attention":
            self.mixer = CausalSelfAttention(cfg)
        elif cfg.mixer == "toeplitz":
            self.mixer = ToeplitzMixer(cfg)
        else:
            self.mixer = mixer_class(cfg.mixer)(cfg)
        self.mlp = MLP(cfg)

    def mix(self, x, cos, sin, mixer_path: str, cache: dict | None):
        """The token mixer on x, called as its kind takes it: attention needs the rotary tables, Toeplitz a path,
        a registered mixer only x and its cache (the contract in mixers.register_mixer)."""
        if self.kind == "attention":
            return self.mixer(x, cos, sin, cache)
        if self.kind == "toeplitz":
            return self.mixer(x, mixer_path, cache)
        return self.mixer(x, cache)

    def forward(self, x, cos, sin, mixer_path: str, cache: dict | None):
        x = x + self.mix(norm(x), cos, sin, mixer_path, cache)
        return x + self.mlp(norm(x))


class Cache(list):
    """generate()'s cache: one dict per layer, each its mixer's own, and pos, the positions they hold (counted
    here by forward, not read from the dicts: a registered mixer keeps in its dict whatever it needs)."""

    def __init__(self, n_layer: int):
        super().__init__(dict() for _ in range(n_layer))
        self.pos = 0


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.arch != "nanochat":  # a nanogpt config built here would silently train another architecture
            raise ValueError(
                f"GPTConfig.arch={cfg.arch!r}: GPT builds arch='nanochat'; build any config with "
                f"trainables.model.build_model"
            )
        if cfg.attn_backend == "flash" and cfg.mixer == "attention" and not flash_attn_available():
            raise ValueError(
                "GPTConfig.attn_backend='flash' needs a CUDA GPU and the flash-attn package "
                "(pip install -e .[gpu]); use attn_backend='sdpa' (default) or 'manual'"
            )
        self.cfg = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        # Rotary tables for the normal heads; not parameters, not saved (they follow from the config).
        cos, sin = rotary_tables(
            nanohead_split(cfg).normal_dim if cfg.mixer == "attention" else 2, cfg.seq_len, cfg.rope_base
        )
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(
                "c_proj.weight"
            ):  # residual projections: scaled so the stream's variance holds with depth (GPT-2)
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * cfg.n_layer) ** 0.5)
        if cfg.init == "nanochat":
            self._init_nanochat()

    @torch.no_grad()
    def _init_nanochat(self):
        """nanochat's init_weights (its learning rates assume it): embedding N(0, 1), lm_head N(0, 0.001), the
        blocks' input matrices uniform with std 1/sqrt(n_embd), both residual projections zero."""
        nn.init.normal_(self.transformer.wte.weight, mean=0.0, std=1.0)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
        s = 3**0.5 * self.cfg.n_embd**-0.5  # a uniform of this bound has std 1/sqrt(n_embd)
        for name, p in self.transformer.h.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.zeros_(p)
            else:
                nn.init.uniform_(p, -s, s)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # parameters() yields a tied weight once

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        loss_reduction: str = "mean",
        mixer_path: str = "parallel",
        cache: Cache | None = None,
    ):
        """idx [B, T] -> logits [B, T, vocab]; with targets, the cross-entropy (mean, or [B, T] with
        loss_reduction="none"; targets == -1 are ignored). cache: generate()'s, one dict per layer."""
        B, T = idx.shape
        pos = cache_len(cache)
        if pos + T > self.cfg.seq_len:
            raise ValueError(f"sequence of {pos + T} tokens is longer than GPTConfig.seq_len={self.cfg.seq_len}")
        cos, sin = self.cos[pos : pos + T], self.sin[pos : pos + T]
        x = norm(self.transformer.wte(idx))
        for i, block in enumerate(self.transformer.h):
            x = block(x, cos, sin, mixer_path, None if cache is None else cache[i])
        if cache is not None:
            cache.pos += T
        logits = self.lm_head(norm(x))
        if targets is None:
            return softcap(logits, self.cfg.logit_softcap)
        return softcap_cross_entropy(logits, targets, self.cfg.logit_softcap, loss_reduction)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        *,
        mixer_path: str = "parallel",
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Samples max_new_tokens after idx [B, T] -> [B, T + max_new_tokens]. temperature=0 is greedy.

        Keys/values (attention) or mixer inputs (Toeplitz) are cached so each new token costs one
        position. Once the context outgrows seq_len, each step reruns the last seq_len tokens (nanoGPT).
        use_cache=False reruns the whole context every step (the Toeplitz note's uncached baseline), as does
        a registered mixer whose has_cache is False."""
        cache = Cache(len(self.transformer.h)) if use_cache and mixer_has_cache(self.cfg) else None
        logits = self(idx[:, -self.cfg.seq_len :], mixer_path=mixer_path, cache=cache)
        for _ in range(max_new_tokens):
            next_token = sample(logits[:, -1, :], temperature, top_k, generator)
            idx = torch.cat([idx, next_token], dim=1)
            if cache is not None and cache_len(cache) < self.cfg.seq_len:
                logits = self(next_token, mixer_path=mixer_path, cache=cache)
            else:
                cache = None
                logits = self(idx[:, -self.cfg.seq_len :], mixer_path=mixer_path)
        return idx


def cache_len(cache: Cache | None) -> int:
    """Positions already held in a generation cache."""
    return 0 if cache is None else cache.pos


def sample(logits: torch.Tensor, temperature: float, top_k: int | None, generator=None) -> torch.Tensor:
    """logits [B, V] -> next token ids [B, 1]."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1, generator=generator)


# ----------------------------------------------------------------------------- logit softcap and the loss


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap * tanh(logits / cap) (gemma, nanochat): logits smoothly bounded to (-cap, cap). None or 0: off."""
    return cap * torch.tanh(logits / cap) if cap else logits


def softcap_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, cap: float | None, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of softcap(logits) against targets (-1 = ignored), in float32.
    logits [..., V], targets [...]; reduction "mean" (over the targets not ignored) or "none" (shape of targets).

    On a CPU this runs _SoftcapCrossEntropy, the same numbers (every branch is tested against the formula
    in float64) in half the time of the eager composition: see its docstring. Under torch.compile on a CPU,
    _CompiledSoftcapCrossEntropy: one fused kernel forward and one backward, no graph break (inductor's fusion
    of the composition took 95 ms a step against the baseline's 30 ms for plain cross-entropy, and this eager
    kernel behind a graph break left this GPT at 0.85-0.92x the baseline: benchmarks/bench_model.py --profile).
    On a GPU the plain composition, which inductor fuses and the GPU runs at memory speed."""
    V = logits.size(-1)
    flat_logits, flat_targets = logits.reshape(-1, V), targets.reshape(-1)
    if logits.device.type == "cpu" and torch.compiler.is_compiling():
        if cap and cap <= _NO_MAX_CAP:
            loss = _CompiledSoftcapCrossEntropy.apply(flat_logits, flat_targets, cap, reduction == "mean")
        else:
            loss = _composed_softcap_cross_entropy(flat_logits, flat_targets, cap, reduction)
    elif logits.device.type == "cpu":
        loss = _cpu_softcap_cross_entropy(flat_logits, flat_targets, cap, reduction == "mean")
    else:
        loss = _composed_softcap_cross_entropy(flat_logits, flat_targets, cap, reduction)
    return loss.view(targets.shape) if reduction == "none" else loss


def _cpu_softcap_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, cap: float | None, mean: bool
) -> torch.Tensor:
    return _SoftcapCrossEntropy.apply(logits, targets, cap, mean)


def _composed_softcap_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, cap: float | None, reduction: str):
    return F.cross_entropy(softcap(logits, cap).float(), targets, ignore_index=-1, reduction=reduction)


_NO_MAX_CAP = 40.0  # |softcap(z)| < cap <= 40: exp of it neither overflows nor underflows in float32


class _CompiledSoftcapCrossEntropy(torch.autograd.Function):
    """The same loss written for inductor (CPU, under torch.compile): forward is one fused pass over the logits
    (log-sum-exp without the max pass, which a capped logit does not need, and the target's logit gathered
    before the softcap), backward one fused pass that writes the gradient (softmax - onehot) * d softcap / dz
    from the logits and the saved log-sum-exp; tanh as 2 sigmoid(2u) - 1, as in _SoftcapCrossEntropy."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, cap: float, mean: bool):
        z = logits.float()
        valid = targets != -1
        row_weight = valid / valid.sum() if mean else valid.float()
        tgt = targets.clamp(min=0).unsqueeze(1)
        lse = _softcap_sigmoid(z, cap).exp().sum(dim=1).log()
        losses = (lse - _softcap_sigmoid(z.gather(1, tgt).squeeze(1), cap)) * row_weight
        ctx.save_for_backward(logits, tgt, lse, row_weight)
        ctx.cap = cap
        return losses.sum() if mean else losses

    @staticmethod
    def backward(ctx, g):
        logits, tgt, lse, row_weight = ctx.saved_tensors
        s = torch.sigmoid(logits.float() * (2 / ctx.cap))
        onehot = (
            torch.arange(logits.size(1), dtype=torch.int32, device=logits.device) == tgt.int()
        )  # int32: half the lanes of int64
        w = (row_weight * g * 4).unsqueeze(1)  # d softcap / dz = 1 - tanh^2 = 4 s (1 - s)
        grad = (torch.exp(ctx.cap * (2 * s - 1) - lse.unsqueeze(1)) - onehot.float()) * w * s * (1 - s)
        return grad.to(logits.dtype), None, None, None


def _softcap_sigmoid(z: torch.Tensor, cap: float) -> torch.Tensor:
    return cap * (2 * torch.sigmoid(z * (2 / cap)) - 1)


class _SoftcapCrossEntropy(torch.autograd.Function):
    """Cross-entropy of cap * tanh(z / cap) per row (or its mean over the rows not ignored), its gradient
    computed in the same pass.

    The composition (div, tanh, mul, log_softmax, nll and autograd through each) makes ~12 passes over the
    [N, V] logits, each out of cache: on a 2-core CPU it costs this GPT ~10% of a training step. Here the
    rows go in chunks of ~2 MB that stay in L2 while the softcap, the log-sum-exp, the softmax and the
    gradient (softmax - onehot) * d softcap / dz are computed; backward hands back the stored gradient
    (the mean's 1/count already in it), scaled only if the upstream gradient is not 1.
    tanh(u) is computed as 2 sigmoid(2u) - 1, which CPU PyTorch runs ~3x faster than its tanh, and
    d/dz [cap tanh(z / cap)] = 1 - tanh^2 = 4 s (1 - s) with s that sigmoid. Rows whose target is -1 get loss
    0 and gradient 0. Without softcap (cap None or 0) the same code runs with y = z."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, cap: float | None, mean: bool):
        N, V = logits.shape
        rows = max(1, (1 << 19) // V)  # 2**19 floats = 2 MB per chunk
        need_grad = logits.requires_grad
        grad = torch.empty(N, V, dtype=torch.float32) if need_grad else None
        losses = torch.empty(N, dtype=torch.float32)
        valid = targets != -1
        # d loss / d row: 1/count for the mean (nan for no valid row, as F.cross_entropy), else 1; 0 where ignored
        row_weight = (valid / valid.sum() if mean else valid.float()).unsqueeze(1)
        tgt = targets.clamp(min=0).unsqueeze(1)
        s_buf, y_buf = torch.empty(min(rows, N), V), torch.empty(min(rows, N), V)
        for i in range(0, N, rows):
            j = min(i + rows, N)
            s, y = s_buf[: j - i], (grad[i:j] if need_grad else y_buf[: j - i])
            z = logits[i:j].float()  # bf16 logits (autocast): the softcap and the loss still in float32
            if cap:
                torch.mul(z, 2 / cap, out=s).sigmoid_()  # s = sigmoid(2z / cap)
                torch.mul(s, 2 * cap, out=y).sub_(cap)  # y = cap (2s - 1) = cap tanh(z / cap)
            else:
                y.copy_(z)
            y_max = y.amax(dim=1, keepdim=True)
            y_target = y.gather(1, tgt[i:j])
            y.sub_(y_max).exp_()
            total = y.sum(dim=1, keepdim=True)
            losses[i:j] = (y_max + total.log() - y_target).squeeze(1)
            if need_grad:
                w = row_weight[i:j] * 4 if cap else row_weight[i:j]  # the softcap's factor 4 (below) folded in
                y.mul_(w / total).scatter_add_(1, tgt[i:j], -w)  # w (softmax - onehot)
                if cap:
                    y.mul_(torch.addcmul(s, s, s, value=-1))  # * s (1 - s): the chain rule through the softcap
        ctx.save_for_backward(grad)
        ctx.mean, ctx.logits_dtype = mean, logits.dtype
        return (losses * row_weight.squeeze(1)).sum() if mean else losses.mul_(valid)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        if (
            ctx.mean and g.item() == 1.0
        ):  # loss.backward(): the gradient as stored (not in place: backward may run twice)
            return grad.to(ctx.logits_dtype), None, None, None
        return (grad * (g if ctx.mean else g.unsqueeze(1))).to(ctx.logits_dtype), None, None, None
