"""Probes: measure what each study's hypothesis is about, not only the loss.

Run on a trained model (the final checkpoint of a trial) over a few fixed val batches. Every probe
is a plain function of (model, tokens); `run_probes` picks the ones that apply to the model's config
and returns flat `probe_*` scalars (for trials.parquet) and per-layer / per-head details (for the
report's figures).

  softmax1 (outliers, quantization; Bondarenko et al. 2023, "Quantizable Transformers"):
      activation_stats   inf-norm and kurtosis of the residual stream and of the attention output, per layer
      head_stats         attention mass on the first token (the "sink"), per head
      w8a8_loss          val loss after per-tensor symmetric int8 fake-quantization of weights and activations
  nano heads (what tiny position-free heads learn):
      head_stats         entropy, previous-token score, first-token score, row mass, per head and kind
      head_ablation      loss increase when one head's output is zeroed
  Toeplitz:
      toeplitz_filters   each head's filter over lags, the effective weights after the mean, receptive field

Conventions:
  - kurtosis is Pearson's (not excess): E[(x-mu)^4] / sigma^4 with population moments, so a normal
    sample gives 3. This is the number Bondarenko et al. report.
  - attention probabilities are recomputed explicitly from each layer's captured input (the model's
    own backends never materialise them), with the model's exact math: RoPE on normal heads only,
    QK norm, scale 1/sqrt(head dim), causal mask, GQA, softmax or softmax1. Heads are ordered as in
    the model's layouts: normal heads first, then nano heads.
  - softmax1 rows sum to less than 1 (the rest is attention "to nothing"). Per-head scores
    prev_token and first_token are the raw weights (what the head actually mixes in); entropy is
    that of the renormalised row (where the head looks, given that it looks), and the row sum is
    reported as "mass" (exactly 1 for softmax).
  - per-head scores are averaged over the batch and query positions t >= 1 (position 0 can only see
    itself). At t = 1 the previous token is the first token, so the two scores share that position.
  - probes run in the model's dtype, without autocast; fp32 checkpoints give the cleanest numbers.
    Statistics are accumulated in float64.
  - a torch.compile'd or DDP-wrapped model is unwrapped (hooks need the eager modules).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable

import torch
import torch.nn as nn
from torch import Tensor

from .model.attention import CausalSelfAttention, causal_probs, norm
from .model.gpt import softcap_cross_entropy
from .model.nanogpt import CausalSelfAttention as NanoGPTAttention
from .model.nanogpt import NanoGPT
from .model.toeplitz import ToeplitzMixer

MAX_ABLATION_HEADS = 64  # head_ablation costs one forward per head: beyond this, a fixed sample
PROBS_CHUNK_BYTES = 256 * 2**20  # head_stats materialises [rows, H, T, T] per layer: bounded by this
ABLATION_SEED = 0


# ------------------------------------------------------------------------------------------ statistics


def kurtosis(x: Tensor) -> float:
    """Pearson kurtosis E[(x-mu)^4] / sigma^4 over all elements, population moments (a normal -> 3,
    not excess kurtosis; the convention of Bondarenko et al. 2023). nan for a constant tensor."""
    x = x.detach().reshape(-1).to(torch.float64)
    d = x - x.mean()
    m2 = d.square().mean()
    m4 = d.square().square().mean()
    return float(m4 / m2.square()) if m2 > 0 else float("nan")


def inf_norm(x: Tensor) -> float:
    """max |x| over all elements."""
    return float(x.detach().abs().max())


def receptive_field(w: Tensor, mass: float = 0.9) -> int:
    """Smallest lag L with sum_{k<=L} |w_k| >= mass * sum_k |w_k| (w indexed by lag; 0 for an all-zero w).

    Compared with a relative slack of 1e-9, so that float rounding of the cumulative sum cannot move
    an exact boundary (a uniform filter over L lags gives ceil(0.9 L) - 1)."""
    a = w.detach().reshape(-1).abs().to(torch.float64)
    total = float(a.sum())
    if total == 0:
        return 0
    c = torch.cumsum(a, 0)
    return int(torch.nonzero(c >= mass * total * (1 - 1e-9))[0, 0])


# ------------------------------------------------------------------------------------------ helpers


def _unwrap(model: nn.Module) -> nn.Module:
    """The eager module under torch.compile (_orig_mod) and DDP (module) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


@contextlib.contextmanager
def _evaluating(model: nn.Module):
    """eval mode and no grad, restoring the train mode after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _hooks(handles: list):
    try:
        yield handles
    finally:
        for h in handles:
            h.remove()


def _mixers(model: nn.Module) -> list[nn.Module]:
    """Each block's token mixer: `mixer` in the nanochat-style GPT, `attn` in NanoGPT (nanoGPT's module names)."""
    return [b.attn if isinstance(model, NanoGPT) else b.mixer for b in model.transformer.h]


def _attn_layers(model: nn.Module) -> list[CausalSelfAttention | NanoGPTAttention]:
    layers = _mixers(model)
    if not all(isinstance(a, (CausalSelfAttention, NanoGPTAttention)) for a in layers):
        raise ValueError(
            f"attention probes need an attention model (mixer='attention'); this one uses {type(layers[0]).__name__}"
        )
    return layers


def _head_kinds(attn: CausalSelfAttention) -> list[tuple[str, slice]]:
    """(kind, slice of the concatenated attention output = c_proj input) per query head, in layout order."""
    s = attn.split
    out = [("normal", slice(h * s.normal_dim, (h + 1) * s.normal_dim)) for h in range(s.n_normal)]
    base = s.n_normal * s.normal_dim
    out += [("nano", slice(base + j * s.nano_dim, base + (j + 1) * s.nano_dim)) for j in range(s.n_nano)]
    return out


def _loss(model: nn.Module, idx: Tensor, targets: Tensor) -> float:
    """Mean cross-entropy in nats over the targets that are not -1."""
    return float(model(idx, targets))


def _capture_attn_inputs(model: nn.Module, idx: Tensor) -> list[tuple[Tensor, ...]]:
    """One forward; returns each attention layer's tensor inputs as the module received them, which are what its
    qkv() takes: (x, cos, sin) for gpt.GPT's attention (RoPE), (x,) for nanoGPT's."""
    layers = _attn_layers(model)
    captured: list = [None] * len(layers)

    def hook(i):
        def fn(module, args, kwargs):
            vals = [a for a in args if isinstance(a, Tensor)] + [kwargs[n] for n in ("x", "cos", "sin") if n in kwargs]
            captured[i] = tuple(v.detach() for v in vals)

        return fn

    with _hooks([a.register_forward_pre_hook(hook(i), with_kwargs=True) for i, a in enumerate(layers)]):
        model(idx)
    return captured


def _probs_from_input(attn: CausalSelfAttention | NanoGPTAttention, x: Tensor, *rope: Tensor) -> Tensor:
    """[B, H_total, T, T] attention probabilities of one layer, recomputed from its input x [B, T, C] (and the
    cos/sin tables it was given, for RoPE)."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    out = []
    for q, k, _ in attn.qkv(x, *rope).values():  # normal heads, then nano heads
        if q.size(2) == 0:
            continue
        q, k = q.transpose(1, 2).to(dtype), k.transpose(1, 2).to(dtype)  # [B, H, T, D]
        out.append(causal_probs(q, k, attn.cfg.softmax1))
    return torch.cat(out, dim=1)


# ------------------------------------------------------------------------------------------ attention probes


def attention_probs(model: nn.Module, idx: Tensor) -> list[Tensor]:
    """Per layer, the explicit attention probabilities [B, H_total, T, T] (normal heads, then nano heads),
    softmax or softmax1 as the model uses. Attention models only (ValueError for the Toeplitz mixer).
    Memory: B * H_total * T^2 per layer; head_stats chunks the batch instead of calling this."""
    model = _unwrap(model)
    with _evaluating(model):
        inputs = _capture_attn_inputs(model, idx)
        return [_probs_from_input(a, *inp) for a, inp in zip(_attn_layers(model), inputs)]


def head_stats(model: nn.Module, idx: Tensor) -> list[dict]:
    """Per (layer, head): {"layer", "head", "kind", "entropy", "prev_token", "first_token", "mass"},
    averaged over the batch and query positions t >= 1.

    entropy: nats, of each query's renormalised attention row p / sum(p) (softmax1 rows sum to < 1);
    prev_token: the weight on position t-1; first_token: the weight on position 0 (the "sink");
    mass: the row sum (1 for softmax; for softmax1, 1 - mass is the attention paid to nothing)."""
    model = _unwrap(model)
    B, T = idx.shape
    if T < 2:
        raise ValueError(f"head_stats needs sequences of at least 2 tokens, got T={T}")
    layers = _attn_layers(model)
    n_heads = [len(_head_kinds(a)) for a in layers]
    rows = max(1, PROBS_CHUNK_BYTES // (4 * max(n_heads) * T * T))
    sums = [torch.zeros(4, h, dtype=torch.float64) for h in n_heads]  # entropy, prev, first, mass
    with _evaluating(model):
        for chunk in idx.split(rows):
            inputs = _capture_attn_inputs(model, chunk)
            for i, (attn, inp) in enumerate(zip(layers, inputs)):
                p = _probs_from_input(attn, *inp)[:, :, 1:, :]  # [b, H, T-1, T], queries t >= 1
                mass = p.sum(-1)
                q = p / mass.clamp(min=torch.finfo(p.dtype).tiny).unsqueeze(-1)
                entropy = -torch.xlogy(q, q).sum(-1)
                prev = torch.diagonal(p, offset=0, dim1=-2, dim2=-1)  # row t-1 of p[:, :, 1:] is query t; key t-1
                first = p[..., 0]
                for j, stat in enumerate((entropy, prev, first, mass)):
                    sums[i][j] += stat.to(torch.float64).sum(dim=(0, 2)).cpu()
    n = B * (T - 1)
    out = []
    for i, attn in enumerate(layers):
        for h, (kind, _) in enumerate(_head_kinds(attn)):
            e, pv, f, m = (float(sums[i][j, h] / n) for j in range(4))
            out.append(dict(layer=i, head=h, kind=kind, entropy=e, prev_token=pv, first_token=f, mass=m))
    return out


def _pick_heads(heads: list[tuple[int, int, str]], max_heads: int | None) -> list[tuple[int, int, str]]:
    """All heads, or a fixed (seeded) sample of max_heads, shared as evenly as possible between kinds so
    that a model with few normal and many nano heads still gets both measured."""
    if max_heads is None or len(heads) <= max_heads:
        return heads
    gen = torch.Generator().manual_seed(ABLATION_SEED)
    by_kind = {}
    for h in heads:
        by_kind.setdefault(h[2], []).append(h)
    groups = sorted(by_kind.values(), key=len)
    left, picked = max_heads, []
    for i, group in enumerate(groups):
        take = min(len(group), left // (len(groups) - i))
        picked += [group[j] for j in torch.randperm(len(group), generator=gen)[:take].tolist()]
        left -= take
    return sorted(picked)


def _block_inputs(model: nn.Module, idx: Tensor, targets: Tensor) -> tuple[list[tuple[tuple, dict]], float]:
    """One forward; returns the (args, kwargs) each block was called with (args[0]: the residual stream),
    and the model's mean loss."""
    blocks = list(model.transformer.h)
    captured: list = [None] * len(blocks)

    def hook(i):
        def fn(module, args, kwargs):
            captured[i] = (args, kwargs)

        return fn

    with _hooks([b.register_forward_pre_hook(hook(i), with_kwargs=True) for i, b in enumerate(blocks)]):
        loss = _loss(model, idx, targets)
    return captured, loss


def _loss_from_layer(model: nn.Module, inputs: list[tuple[tuple, dict]], start: int, targets: Tensor) -> float:
    """The model's mean loss recomputed from block `start` on, given every block's captured call: the
    blocks before `start` are not rerun. Mirrors the tail of GPT.forward (final norm, lm_head, softcap,
    cross-entropy); head_ablation checks it against the model's own loss before trusting it."""
    blocks = list(model.transformer.h)
    x = inputs[start][0][0]
    for i in range(start, len(blocks)):
        args, kwargs = inputs[i]
        x = blocks[i](x, *args[1:], **kwargs)
    final_norm = getattr(model.transformer, "ln_f", norm)  # nanoGPT's LayerNorm, else the parameter-free RMSNorm
    return float(softcap_cross_entropy(model.lm_head(final_norm(x)), targets, model.cfg.logit_softcap))


def head_ablation(
    model: nn.Module, idx: Tensor, targets: Tensor, *, max_heads: int | None = MAX_ABLATION_HEADS
) -> list[dict]:
    """Per (layer, head): {"layer", "head", "kind", "loss_increase"}: the mean loss with that head's slice
    of the concatenated attention output zeroed (a forward_pre_hook on attn.c_proj) minus the base loss.

    One partial forward per head: from that head's layer on, the earlier layers' outputs being reused
    (checked once against the model's own loss; if they disagree, every ablation runs the whole model).
    With more than max_heads heads, a fixed seeded sample of max_heads (split evenly between normal and
    nano heads) is ablated, and only those are returned."""
    model = _unwrap(model)
    layers = _attn_layers(model)
    heads = [(i, h, kind) for i, a in enumerate(layers) for h, (kind, _) in enumerate(_head_kinds(a))]
    out = []
    with _evaluating(model):
        inputs, base = _block_inputs(model, idx, targets)
        partial = math.isclose(_loss_from_layer(model, inputs, 0, targets), base, rel_tol=1e-6, abs_tol=1e-6)
        for i, h, kind in _pick_heads(heads, max_heads):
            sl = _head_kinds(layers[i])[h][1]

            def zero_head(module, args, sl=sl):
                y = args[0].clone()
                y[..., sl] = 0
                return (y, *args[1:])

            with _hooks([layers[i].c_proj.register_forward_pre_hook(zero_head)]):
                loss = _loss_from_layer(model, inputs, i, targets) if partial else _loss(model, idx, targets)
            out.append(dict(layer=i, head=h, kind=kind, loss_increase=loss - base))
    return out


# ------------------------------------------------------------------------------------------ activations, quantization


def activation_stats(model: nn.Module, idx: Tensor) -> list[dict]:
    """Per layer: {"layer", "resid_inf_norm", "resid_kurtosis", "attn_inf_norm", "attn_kurtosis"}: the
    block's output (the residual stream after the layer) and the mixer's output (attention or Toeplitz,
    before it is added to the stream), each over all its elements."""
    model = _unwrap(model)
    blocks = list(model.transformer.h)
    stats = [dict(layer=i) for i in range(len(blocks))]

    def hook(i, prefix):
        def fn(module, args, output):
            stats[i][f"{prefix}_inf_norm"] = inf_norm(output)
            stats[i][f"{prefix}_kurtosis"] = kurtosis(output)

        return fn

    handles = [b.register_forward_hook(hook(i, "resid")) for i, b in enumerate(blocks)]
    handles += [m.register_forward_hook(hook(i, "attn")) for i, m in enumerate(_mixers(model))]
    with _evaluating(model), _hooks(handles):
        model(idx)
    return stats


def _fake_quant(x: Tensor) -> Tensor:
    """Per-tensor symmetric int8: round(x / s).clamp(-127, 127) * s with s = max|x| / 127 (x itself if all zero)."""
    s = x.detach().abs().max() / 127
    if s == 0:
        return x
    return torch.round(x / s).clamp(-127, 127) * s


def w8a8_loss(model: nn.Module, idx: Tensor, targets: Tensor) -> tuple[float, float]:
    """(fp loss, W8A8 loss), mean nats/token.

    W8A8 here is simple post-training fake quantization on a deep copy (the model is left unchanged):
    every nn.Linear weight per-tensor symmetric int8 (scale max|w|/127), and every nn.Linear input
    activation per-tensor symmetric int8, dynamic (scale max|x|/127 of that call's input), via a
    forward_pre_hook. Not quantized: the embedding lookup (unless tied to the lm_head, whose
    quantized weight it then shares), the Toeplitz filters, and the attention internals (q.k, p.v)."""
    model = _unwrap(model)
    with _evaluating(model):
        fp = _loss(model, idx, targets)
    q = copy.deepcopy(model)
    linears = [m for m in q.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for m in linears:
            m.weight.copy_(_fake_quant(m.weight))
    handles = [m.register_forward_pre_hook(lambda module, args: (_fake_quant(args[0]), *args[1:])) for m in linears]
    with _evaluating(q), _hooks(handles):
        w8a8 = _loss(q, idx, targets)
    del q
    return fp, w8a8


# ------------------------------------------------------------------------------------------ Toeplitz


def toeplitz_filters(model: nn.Module) -> list[dict]:
    """Per (layer, head): {"layer", "head", "filter", "effective", "receptive_field"}.

    filter: the learned weights w over lags 0..seq_len-1 (ToeplitzMixer.filters(): raw, or exp(raw) with
    toep_filter="exp"). effective: what multiplies x_{t-k} at the last position of a full window: w / sum(w)
    with toep_mean (the weighted mean's normalisation), else w. receptive_field: on effective, the
    smallest lag holding 90% of the absolute mass."""
    model = _unwrap(model)
    mixers = _mixers(model)
    if not all(isinstance(m, ToeplitzMixer) for m in mixers):
        raise ValueError("toeplitz_filters needs a Toeplitz model (mixer='toeplitz')")
    out = []
    with torch.no_grad():
        for i, mixer in enumerate(mixers):
            w = mixer.filters().detach().to(torch.float64).cpu()
            eff = w / w.sum(dim=1, keepdim=True) if mixer.mean else w
            for h in range(mixer.n_head):
                out.append(
                    dict(
                        layer=i,
                        head=h,
                        filter=w[h].tolist(),
                        effective=eff[h].tolist(),
                        receptive_field=receptive_field(eff[h]),
                    )
                )
    return out


# ------------------------------------------------------------------------------------------ all of them


def _probe_batches(data, seq_len: int, batch_size: int, batches: int) -> tuple[Tensor, Tensor]:
    """The first `batches` fixed val batches of a TokenData (trainables.data.val_batches), or of any
    iterable of (x, y) pairs, concatenated along the batch."""
    if hasattr(data, "val_tokens"):
        from .data.bpb import val_batches

        pairs: Iterable = val_batches(data, batch_size, seq_len, max_batches=batches)
    else:
        pairs = (pair for _, pair in zip(range(batches), data))
    xs, ys = zip(*pairs)
    return torch.cat(xs), torch.cat(ys)


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def run_probes(
    model: nn.Module,
    data,
    seq_len: int,
    batch_size: int = 8,
    batches: int = 2,
    device="cpu",
    *,
    max_ablation_heads: int | None = MAX_ABLATION_HEADS,
) -> tuple[dict, dict]:
    """Runs the probes that apply to the model's config on the first `batches` fixed val batches, in eval
    mode without grad (the train mode is restored after). data: a TokenData, or an iterable of (x, y).

    Returns (scalars, details). scalars: flat {"probe_...": float} for trials.parquet:
      every model:      probe_max_inf_norm, probe_max_kurtosis (max over layers of the residual stream's),
                        probe_attn_max_inf_norm, probe_attn_max_kurtosis (the mixer output's),
                        probe_fp_loss, probe_w8a8_loss, probe_w8a8_delta (w8a8 - fp; nats/token)
      attention:        probe_sink_mass (mean first-token weight over heads and layers), probe_attn_mass
                        (mean row mass: < 1 only with softmax1), probe_normal_prev_token,
                        probe_normal_entropy, probe_normal_ablation (means over normal heads)
      with nano heads:  probe_nano_prev_token, probe_nano_entropy, probe_nano_ablation
      Toeplitz:         probe_receptive_field_mean, probe_receptive_field_max (over heads and layers)
      a registered mixer: only those every model has
    details (JSON-serialisable): "activations" (per layer), "heads" and "ablation" (per head; attention),
    "filters" (per head; Toeplitz), "tokens" (target tokens probed), "ablated_heads"/"total_heads"/
    "ablation_tokens" (attention).
    Head ablation runs on the first batch only (one forward per head, at most max_ablation_heads heads:
    a seeded sample split evenly between normal and nano heads beyond that); every other probe on all
    the batches.
    """
    model = _unwrap(model)
    x, y = _probe_batches(data, seq_len, batch_size, batches)
    x, y = x.to(device), y.to(device)
    scalars: dict = {}
    details: dict = {"tokens": int(y.numel())}
    was_training = model.training
    try:
        model.eval()
        acts = activation_stats(model, x)
        details["activations"] = acts
        scalars["probe_max_inf_norm"] = max(a["resid_inf_norm"] for a in acts)
        scalars["probe_max_kurtosis"] = max(a["resid_kurtosis"] for a in acts)
        scalars["probe_attn_max_inf_norm"] = max(a["attn_inf_norm"] for a in acts)
        scalars["probe_attn_max_kurtosis"] = max(a["attn_kurtosis"] for a in acts)
        fp, q = w8a8_loss(model, x, y)
        scalars.update(probe_fp_loss=fp, probe_w8a8_loss=q, probe_w8a8_delta=q - fp)

        if model.cfg.mixer == "attention":
            heads = head_stats(model, x)
            # One forward per head: on the first batch only, so a few dozen heads stay a few seconds on CPU.
            xa, ya = x[:batch_size], y[:batch_size]
            ablation = head_ablation(model, xa, ya, max_heads=max_ablation_heads)
            details.update(
                heads=heads,
                ablation=ablation,
                ablated_heads=len(ablation),
                total_heads=len(heads),
                ablation_tokens=int(ya.numel()),
            )
            scalars["probe_sink_mass"] = _mean([h["first_token"] for h in heads])
            scalars["probe_attn_mass"] = _mean([h["mass"] for h in heads])
            kinds = ["normal"] + (["nano"] if any(h["kind"] == "nano" for h in heads) else [])
            for kind in kinds:
                scalars[f"probe_{kind}_prev_token"] = _mean([h["prev_token"] for h in heads if h["kind"] == kind])
                scalars[f"probe_{kind}_entropy"] = _mean([h["entropy"] for h in heads if h["kind"] == kind])
                scalars[f"probe_{kind}_ablation"] = _mean([a["loss_increase"] for a in ablation if a["kind"] == kind])
        elif model.cfg.mixer == "toeplitz":  # a registered mixer gets only the probes every model has
            filters = toeplitz_filters(model)
            details["filters"] = filters
            rf = [f["receptive_field"] for f in filters]
            scalars["probe_receptive_field_mean"] = _mean(rf)
            scalars["probe_receptive_field_max"] = float(max(rf))
    finally:
        model.train(was_training)
    return {k: float(v) for k, v in scalars.items()}, details
