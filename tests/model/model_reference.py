"""Naive references for the model core, written from the contract's math, not from the code.

Everything here runs in float64 with explicit loops or explicit T x T matrices, so that it is slow and
obviously right. The model's weights are read from the model (that is the only thing taken from it);
the head layout, RoPE, softmax / softmax1, Toeplitz mixing, norms and softcap are re-derived here.

Used by the tests in this folder; nothing in trainables imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

F64 = torch.float64
EPS64 = torch.finfo(F64).eps  # F.rms_norm's default eps for float64 inputs


# ----------------------------------------------------------------------------------------------
# Head split (independent re-statement of the rule in the contract)


@dataclass(frozen=True)
class RefSplit:
    n_normal: int
    normal_dim: int
    n_nano: int
    nano_dim: int
    n_kv_normal: int
    n_kv_nano: int


def ref_split(n_embd: int, n_head: int, n_kv_head: int | None, p: float, nd: int) -> RefSplit | None:
    """The nano-head split by brute force; None when no valid split exists (the config must be rejected)."""
    n_kv_head = n_head if n_kv_head is None else n_kv_head
    g = n_head // n_kv_head
    if p == 0:
        hd = n_embd // n_head
        if n_embd % n_head or hd % 2:
            return None
        return RefSplit(n_head, hd, 0, nd, n_kv_head, 0)
    valid = []
    for k in range(1, n_embd + 1):
        rest = n_embd - k * nd
        if rest <= 0:
            break
        if k % g == 0 and rest % (2 * n_head) == 0 and rest // n_head >= 2:
            valid.append(k)
    if not valid:
        return None
    target = p * n_embd / nd
    best = valid[0]
    for k in valid[1:]:  # strictly nearer wins; equal distance keeps the smaller (earlier) k
        if abs(k - target) < abs(best - target):
            best = k
    rest = n_embd - best * nd
    return RefSplit(n_head, rest // n_head, best, nd, n_head // g, best // g)


def cfg_split(cfg) -> RefSplit:
    s = ref_split(cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.nanohead_proportion, cfg.nanohead_dim)
    assert s is not None, f"test bug: config has no valid split: {cfg}"
    return s


# ----------------------------------------------------------------------------------------------
# Elementary pieces


def rms(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm without gain over the last dim."""
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + EPS64)


def rope(x: torch.Tensor, base: float, offset: int = 0) -> torch.Tensor:
    """nanochat RoPE on x [B, T, H, d]: rotate (x1, x2) halves by angle t * base^(-2i/d)."""
    B, T, H, d = x.shape
    assert d % 2 == 0
    half = d // 2
    out = torch.empty_like(x)
    for i in range(half):
        inv_freq = 1.0 / (base ** ((2 * i) / d))
        for t in range(T):
            a = (t + offset) * inv_freq
            c, s = math.cos(a), math.sin(a)
            x1 = x[:, t, :, i]
            x2 = x[:, t, :, half + i]
            out[:, t, :, i] = x1 * c + x2 * s
            out[:, t, :, half + i] = -x1 * s + x2 * c
    return out


def softmax1_formula(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """exp(x_i) / (1 + sum_j exp(x_j)), literally (fine in float64 for moderate x)."""
    e = torch.exp(x.to(F64))
    return e / (1.0 + e.sum(dim=dim, keepdim=True))


# ----------------------------------------------------------------------------------------------
# Attention, one head at a time, explicit causal loops


def attend_loop(q, k, v, kind: str = "softmax") -> torch.Tensor:
    """q [B, T, H, d], k/v [B, T, Hkv, d] -> [B, T, H, d].

    Query head i uses kv head i // (H / Hkv). Query t sees keys 0..t. Scale 1/sqrt(d).
    kind: "softmax" | "softmax1" (exp(s_i) / (1 + sum_{j<=t} exp(s_j))).
    """
    B, T, H, d = q.shape
    Hkv = k.shape[2]
    g = H // Hkv
    out = torch.zeros(B, T, H, v.shape[-1], dtype=F64)
    scale = 1.0 / math.sqrt(d)
    for h in range(H):
        kh = h // g
        for t in range(T):
            s = torch.einsum("bd,bsd->bs", q[:, t, h], k[:, : t + 1, kh]) * scale  # [B, t+1]
            if kind == "softmax":
                e = torch.exp(s - s.max(dim=-1, keepdim=True).values)
                w = e / e.sum(dim=-1, keepdim=True)
            elif kind == "softmax1":
                # exp(s_i) / (1 + sum exp(s_j)), multiplied through by exp(-m) with m = max(0, max s)
                m = torch.clamp(s.max(dim=-1, keepdim=True).values, min=0.0)
                e = torch.exp(s - m)
                w = e / (torch.exp(-m) + e.sum(dim=-1, keepdim=True))
            else:
                raise ValueError(kind)
            out[:, t, h] = torch.einsum("bs,bsd->bd", w, v[:, : t + 1, kh])
    return out


def attend_softmax1_zero_key_topleft(q, k, v, kind: str = "softmax1") -> torch.Tensor:
    """The classic softmax1 bug: prepend a zero key/value and use a top-left aligned causal mask
    (what SDPA's is_causal=True does with T queries and T+1 keys). Query t then sees the zero key
    and keys 0..t-1 -- not itself. Only used to show that the reference tests would catch it."""
    B, T, H, d = q.shape
    Hkv = k.shape[2]
    g = H // Hkv
    k = k.repeat_interleave(g, dim=2)
    v = v.repeat_interleave(g, dim=2)
    zk = torch.zeros(B, 1, H, d, dtype=k.dtype)
    zv = torch.zeros(B, 1, H, v.shape[-1], dtype=v.dtype)
    k1 = torch.cat([zk, k], dim=1).transpose(1, 2)
    v1 = torch.cat([zv, v], dim=1).transpose(1, 2)
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k1, v1, is_causal=True)
    return out.transpose(1, 2)


# ----------------------------------------------------------------------------------------------
# Toeplitz mixing by the O(S^2) sum


def toeplitz_loop(x: torch.Tensor, w: torch.Tensor, mean: bool) -> torch.Tensor:
    """x [B, T, C], w [H, L>=T]: y_t = sum_{s<=t} w_h[t-s] x_s on head h's channels (/ sum_{k<=t} w_h[k] if mean)."""
    B, T, C = x.shape
    H = w.shape[0]
    hd = C // H
    y = torch.zeros(B, T, C, dtype=F64)
    for h in range(H):
        sl = slice(h * hd, (h + 1) * hd)
        for t in range(T):
            acc = torch.zeros(B, hd, dtype=F64)
            for s in range(t + 1):
                acc = acc + w[h, t - s] * x[:, s, sl]
            if mean:
                acc = acc / w[h, : t + 1].sum()
            y[:, t, sl] = acc
    return y


def toeplitz_matrix(x: torch.Tensor, w: torch.Tensor, mean: bool) -> torch.Tensor:
    """The same O(S^2) sum as toeplitz_loop, as an explicit lower-triangular T x T matrix per head (for long T)."""
    B, T, C = x.shape
    H = w.shape[0]
    hd = C // H
    t = torch.arange(T)
    lag = t[:, None] - t[None, :]  # [T, T], t - s
    y = torch.zeros(B, T, C, dtype=F64)
    for h in range(H):
        M = torch.where(lag >= 0, w[h].to(F64)[lag.clamp(min=0)], torch.zeros((), dtype=F64))  # M[t, s] = w[t-s]
        if mean:
            M = M / torch.cumsum(w[h, :T].to(F64), 0)[:, None]
        sl = slice(h * hd, (h + 1) * hd)
        y[:, :, sl] = torch.einsum("ts,bsc->btc", M, x[:, :, sl].to(F64))
    return y


# ----------------------------------------------------------------------------------------------
# Module access (the names the contract fixes, plus the few the contract leaves to the lead)


def mlp_of(block):
    return block.mlp


def toeplitz_projections(mixer):
    """(in_proj, out_proj) Linear modules of a Toeplitz mixer, or (None, None) without projections."""
    lins = [(n, m) for n, m in mixer.named_children() if isinstance(m, torch.nn.Linear)]
    if not lins:
        return None, None
    assert len(lins) == 2, f"expected 2 projections in the Toeplitz mixer, found {[n for n, _ in lins]}"
    names = [n for n, _ in lins]

    def pick(words):
        hits = [m for n, m in lins if any(wd in n.lower() for wd in words)]
        return hits[0] if len(hits) == 1 else None

    inp = pick(("in_proj", "inp", "proj_in", "c_in", "in"))
    out = pick(("out_proj", "proj_out", "c_out", "out", "c_proj"))
    assert inp is not None and out is not None and inp is not out, (
        f"cannot tell the Toeplitz input projection from the output one by name: {names}"
    )
    return inp, out


# ----------------------------------------------------------------------------------------------
# Whole-model reference forward


def d64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(F64)


def attention_ref(attn, cfg, x, *, kind, rope_on_nano=False, attend=attend_loop) -> torch.Tensor:
    """One attention sublayer on normalised input x [B, T, C]."""
    sp = cfg_split(cfg)
    B, T, C = x.shape
    q = x @ d64(attn.c_q.weight).T
    k = x @ d64(attn.c_k.weight).T
    v = x @ d64(attn.c_v.weight).T
    nq = sp.n_normal * sp.normal_dim
    nk = sp.n_kv_normal * sp.normal_dim
    assert q.shape[-1] == nq + sp.n_nano * sp.nano_dim == C
    assert k.shape[-1] == nk + sp.n_kv_nano * sp.nano_dim, (k.shape, sp)
    outs = []
    for kind_of_head in ("normal", "nano"):
        if kind_of_head == "normal":
            hq, hk, d = sp.n_normal, sp.n_kv_normal, sp.normal_dim
            qh, kh, vh = q[..., :nq], k[..., :nk], v[..., :nk]
        else:
            hq, hk, d = sp.n_nano, sp.n_kv_nano, sp.nano_dim
            qh, kh, vh = q[..., nq:], k[..., nk:], v[..., nk:]
        if hq == 0:
            continue
        qh = qh.reshape(B, T, hq, d)
        kh = kh.reshape(B, T, hk, d)
        vh = vh.reshape(B, T, hk, d)
        if kind_of_head == "normal" or rope_on_nano:
            if d % 2 == 0:
                qh, kh = rope(qh, cfg.rope_base), rope(kh, cfg.rope_base)
            else:  # RoPE on an odd-width nano head (only for the "wrong reference"): rotate the even part
                qh = torch.cat([rope(qh[..., : d - 1], cfg.rope_base), qh[..., d - 1 :]], dim=-1)
                kh = torch.cat([rope(kh[..., : d - 1], cfg.rope_base), kh[..., d - 1 :]], dim=-1)
        if cfg.qk_norm:
            qh, kh = rms(qh), rms(kh)
        outs.append(attend(qh, kh, vh, kind).reshape(B, T, hq * d))
    y = torch.cat(outs, dim=-1)
    return y @ d64(attn.c_proj.weight).T


def toeplitz_ref(mixer, cfg, x) -> torch.Tensor:
    inp, out = toeplitz_projections(mixer)
    if cfg.toep_proj:
        assert inp is not None, "toep_proj=True but the mixer has no projections"
        assert (inp.bias is not None) == (out.bias is not None) == cfg.toep_proj_bias, (
            "projection biases != toep_proj_bias"
        )
        x = x @ d64(inp.weight).T + (d64(inp.bias) if cfg.toep_proj_bias else 0)
    else:
        assert inp is None, "toep_proj=False but the mixer has Linear projections"
    w = d64(mixer.filters())
    assert w.shape == (cfg.n_head, cfg.seq_len), w.shape
    T = x.shape[1]
    y = toeplitz_loop(x, w, cfg.toep_mean) if T <= 24 else toeplitz_matrix(x, w, cfg.toep_mean)
    if cfg.toep_proj:
        y = y @ d64(out.weight).T + (d64(out.bias) if cfg.toep_proj_bias else 0)
    return y


def reference_logits(model, cfg, idx, *, kind=None, rope_on_nano=False, attend=attend_loop) -> torch.Tensor:
    """Full forward in float64 from the model's weights. kind overrides softmax/softmax1."""
    if kind is None:
        kind = "softmax1" if cfg.softmax1 else "softmax"
    if cfg.arch == "nanogpt":  # another architecture: nanoGPT's model.py, written out in its own file
        from nanogpt_reference import nanogpt_logits

        return nanogpt_logits(model.state_dict(), cfg.n_head, idx, softmax1=kind == "softmax1")
    with torch.no_grad():
        x = d64(model.transformer.wte.weight)[idx]
        x = rms(x)
        for block in model.transformer.h:
            h = rms(x)
            if cfg.mixer == "attention":
                x = x + attention_ref(block.mixer, cfg, h, kind=kind, rope_on_nano=rope_on_nano, attend=attend)
            else:
                x = x + toeplitz_ref(block.mixer, cfg, h)
            mlp = mlp_of(block)
            h = rms(x) @ d64(mlp.c_fc.weight).T
            h = torch.relu(h) ** 2
            x = x + h @ d64(mlp.c_proj.weight).T
        x = rms(x)
        W = d64(model.transformer.wte.weight) if cfg.tie_embeddings else d64(model.lm_head.weight)
        logits = x @ W.T
        c = cfg.logit_softcap
        if c:
            logits = c * torch.tanh(logits / c)
    return logits


def ref_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token -log softmax(logits)[target] in float64; 0 where target == -1."""
    lg = logits.to(F64)
    m = lg.max(dim=-1, keepdim=True).values
    lse = (m + torch.log(torch.exp(lg - m).sum(dim=-1, keepdim=True))).squeeze(-1)
    safe = targets.clamp(min=0)
    picked = lg.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    loss = lse - picked
    return torch.where(targets == -1, torch.zeros((), dtype=F64), loss)


# ----------------------------------------------------------------------------------------------
# Parameter accounting by hand


def ref_param_counts(
    vocab: int,
    n_layer: int,
    n_embd: int,
    n_head: int,
    *,
    n_kv_head=None,
    mlp_ratio=4.0,
    mixer="attention",
    toep_proj=False,
    toep_proj_bias=False,
    seq_len=256,
    tie=False,
) -> dict:
    """Hand count: no biases, no norm gains. Attention: q and proj n_embd x n_embd, k and v n_embd x n_embd/g
    (independent of the nano split, because normal and nano kv widths both shrink by g).
    Toeplitz: one filter of seq_len lags per head, plus 2 n_embd x n_embd projections with toep_proj
    (and their 2 biases of n_embd with toep_proj_bias)."""
    n_kv_head = n_head if n_kv_head is None else n_kv_head
    g = n_head // n_kv_head
    C = n_embd
    if mixer == "attention":
        mix = C * C + 2 * C * (C // g) + C * C
    else:
        mix = n_head * seq_len + (2 * C * C + (2 * C if toep_proj_bias else 0) if toep_proj else 0)
    mlp = 2 * C * int(mlp_ratio * C)
    blocks = n_layer * (mix + mlp)
    emb = vocab * C
    head = 0 if tie else vocab * C
    return {
        "embedding": emb,
        "lm_head": head,
        "blocks": blocks,
        "total": emb + head + blocks,
        "non_embedding": head + blocks,
    }


def seed_params(vocab: int, depth: int, dim: int) -> int:
    """The formula that reproduces seed 002's table: untied wte + lm_head, 12 d^2 per layer
    (4 d^2 attention with n_kv_head = n_head, 8 d^2 relu^2 MLP at 4x), nothing else."""
    return 2 * vocab * dim + depth * 12 * dim * dim
