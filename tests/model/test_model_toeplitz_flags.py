"""The Toeplitz flags change one thing each (issue 14, note 003).

toep_mean only divides by the cumulative filter sum; toep_filter only maps the parameter to the filter
(w = raw or exp(raw)); toep_init only sets raw at init (N(0, 0.2^2) as the note's model, or decaying
averages); toep_proj_bias only adds the projections' biases. Each is checked against a hand computation in
float64, and count_params against the built model for every combination."""

import itertools
import math

import pytest
import torch
from model_helpers import build, tokens
from model_reference import F64, ref_param_counts

from trainables.model import GPT, GPTConfig, count_params

C, H = 16, 4  # 4 heads of 4 channels


def _cfg(**ov) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=64, n_layer=1, n_embd=C, n_head=H, seq_len=32, mixer="toeplitz"), **ov})


def _mixer(**ov):
    model = build(_cfg(**ov), seed=0)
    return model.transformer.h[0].mixer


def _by_hand(x: torch.Tensor, w: torch.Tensor, mean: bool) -> torch.Tensor:
    """y[b, t, c] = sum_{s<=t} w[h(c), t-s] x[b, s, c] (/ sum_{k<=t} w[h(c), k] with the mean), head h(c) = c // 4."""
    B, T, _ = x.shape
    y = torch.zeros(B, T, C, dtype=F64)
    for c in range(C):
        h = c // (C // H)
        for t in range(T):
            y[:, t, c] = sum(w[h, t - s] * x[:, s, c] for s in range(t + 1))
            if mean:
                y[:, t, c] /= sum(w[h, k] for k in range(t + 1))
    return y


# Raw filter values chosen by hand: for the linear filter, head 0's cumulative sum goes 1, 0.5, -0.3, 0.3, ...
# through negative values, which the note's mean divides by all the same.
RAW = torch.tensor(
    [
        [1.0, -0.5, -0.8, 0.6, 0.25, -0.1, 0.4, 0.3],
        [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
        [-1.0, 0.2, 0.3, -0.4, 0.7, 0.1, -0.2, 0.05],
        [2.0, -1.5, 0.7, 0.0, -0.3, 0.6, -0.9, 1.1],
    ],
    dtype=F64,
)


@pytest.mark.parametrize("path", ["parallel", "sequential"])
@pytest.mark.parametrize("kind", ["linear", "exp"])
def test_mean_is_the_cumulative_sum_division_by_hand(kind, path):
    x = torch.randn(2, 8, C, generator=torch.Generator().manual_seed(1), dtype=F64)
    w = RAW if kind == "linear" else torch.exp(RAW)
    outs = {}
    for mean in (False, True):
        mixer = _mixer(toep_mean=mean, toep_filter=kind, seq_len=8)
        with torch.no_grad():
            mixer.raw.copy_(RAW)
            outs[mean] = mixer(x, path=path)
        assert torch.allclose(outs[mean], _by_hand(x, w, mean), rtol=1e-12, atol=1e-12), (kind, mean)
    # the mean only normalises: the weighted sum times the cumulative sum is the plain sum
    cum = torch.cumsum(w, dim=1)  # [H, T]
    scale = cum.repeat_interleave(C // H, dim=0).T  # [T, C]
    assert torch.allclose(outs[True] * scale, outs[False], rtol=1e-12, atol=1e-12)
    if kind == "linear":
        assert (cum[0] < 0).any(), "the hand-picked linear filter must pass through a negative sum"
    else:
        assert (cum > 0).all()


@pytest.mark.parametrize("mean", [False, True])
def test_filter_maps_the_same_parameter(mean):
    """toep_filter changes only w = f(raw): the same raw gives w = raw (linear) or exp(raw) (exp)."""
    lin, ex = (
        _mixer(toep_mean=mean, toep_filter="linear", seq_len=8),
        _mixer(toep_mean=mean, toep_filter="exp", seq_len=8),
    )
    with torch.no_grad():
        lin.raw.copy_(RAW)
        ex.raw.copy_(RAW)
    assert torch.equal(lin.filters(), RAW)
    assert torch.allclose(
        ex.filters(), torch.tensor([[math.exp(v) for v in row] for row in RAW.tolist()], dtype=F64), rtol=1e-15
    )


def test_normal_init_is_the_notes_n_0_02():
    """The note's model initialises the filter weights with normal_(mean=0, std=0.2), in every arm."""
    cfg = GPTConfig(vocab_size=64, n_layer=4, n_embd=64, n_head=16, seq_len=1024, mixer="toeplitz")
    torch.manual_seed(0)
    raw = torch.cat([b.mixer.raw.detach().flatten() for b in GPT(cfg).transformer.h])  # 65,536 draws
    assert abs(raw.mean().item()) < 0.005  # 5 standard errors (0.2 / 256 = 0.00078) would be 0.004
    assert abs(raw.std().item() - 0.2) < 0.005


@pytest.mark.parametrize("kind", ["linear", "exp"])
def test_ema_init_by_hand(kind):
    """ema: head h starts as exp(-lag / tau_h) / sum, tau_h from 1 to seq_len/4 evenly in log; the same filter
    whichever the parametrisation, so flipping toep_filter alone under this init does not change the initial model."""
    S = 32
    torch.manual_seed(0)
    mixer = GPT(_cfg(toep_init="ema", toep_filter=kind, seq_len=S)).transformer.h[0].mixer
    w = mixer.filters().detach().double()
    for h in range(H):
        tau = 10 ** (h * math.log10(S / 4) / (H - 1))  # 1, 2, 4, 8
        want = [math.exp(-lag / tau) for lag in range(S)]
        want = [v / sum(want) for v in want]
        assert torch.allclose(w[h], torch.tensor(want, dtype=F64), rtol=1e-5, atol=1e-12), h


@pytest.mark.parametrize("mean", [False, True])
def test_projection_biases_change_the_output_by_the_bias_maths(mean):
    """out(x) = W_o T(W_i x + b_i) + b_o with T the mixing. T is linear, so with the same weights the biases add
    W_o T(b_i) + b_o, where T(b_i) at position t is b_i times the cumulative filter sum (1 with the mean)."""
    with_bias = _mixer(toep_mean=mean, toep_proj=True, toep_proj_bias=True)
    without = _mixer(toep_mean=mean, toep_proj=True, toep_proj_bias=False)
    assert without.in_proj.bias is None and without.c_proj.bias is None
    with torch.no_grad():
        without.raw.copy_(with_bias.raw)
        without.in_proj.weight.copy_(with_bias.in_proj.weight)
        without.c_proj.weight.copy_(with_bias.c_proj.weight)
    x = torch.randn(2, 12, C, generator=torch.Generator().manual_seed(2), dtype=F64)
    with torch.no_grad():
        diff = with_bias(x) - without(x)
    b_i, b_o, W_o = (with_bias.in_proj.bias.detach(), with_bias.c_proj.bias.detach(), with_bias.c_proj.weight.detach())
    w = with_bias.raw.detach()[:, :12]  # linear filters (the default)
    cum = torch.ones(12, C, dtype=F64) if mean else torch.cumsum(w, dim=1).repeat_interleave(C // H, dim=0).T
    want = (cum * b_i) @ W_o.T + b_o  # [T, C], the same for every batch row
    assert torch.allclose(diff, want.expand_as(diff), rtol=1e-10, atol=1e-10)


def test_projection_biases_start_at_zero():
    """As the note's model init (zeros_ on every bias): a fresh model's biases are 0."""
    model = GPT(_cfg(n_layer=2, toep_proj=True))
    for block in model.transformer.h:
        assert torch.equal(block.mixer.in_proj.bias, torch.zeros(C))
        assert torch.equal(block.mixer.c_proj.bias, torch.zeros(C))


COMBOS = list(
    itertools.product((False, True), (False, True), (False, True), ("linear", "exp"), ("normal", "ema"), (False, True))
)


@pytest.mark.parametrize("mean,proj,bias,kind,init,tie", COMBOS, ids=["-".join(map(str, c)) for c in COMBOS])
def test_count_params_equals_numel_for_every_combination(mean, proj, bias, kind, init, tie):
    cfg = GPTConfig(
        vocab_size=80,
        n_layer=3,
        n_embd=48,
        n_head=4,
        seq_len=24,
        mixer="toeplitz",
        toep_mean=mean,
        toep_proj=proj,
        toep_proj_bias=bias,
        toep_filter=kind,
        toep_init=init,
        tie_embeddings=tie,
    )
    got = count_params(cfg)
    assert got["total"] == sum(p.numel() for p in GPT(cfg).parameters())
    # by hand: per layer 4 x 24 filter taps; with projections 2 x 48 x 48 (+ 2 x 48 biases); MLP 2 x 48 x 192
    per_layer = 4 * 24 + (2 * 48 * 48 + (2 * 48 if bias else 0) if proj else 0) + 2 * 48 * 192
    assert got["total"] == 80 * 48 * (1 if tie else 2) + 3 * per_layer
    hand = ref_param_counts(80, 3, 48, 4, mixer="toeplitz", toep_proj=proj, toep_proj_bias=bias, seq_len=24, tie=tie)
    assert {k: got[k] for k in hand} == hand


NOTE = dict(toep_filter="linear", toep_init="normal", toep_proj_bias=True)
FLIPS = dict(toep_mean=True, toep_filter="exp", toep_init="ema", toep_proj_bias=False)


@pytest.mark.parametrize("key", FLIPS)
def test_each_key_flipped_alone_changes_only_its_own_part(key):
    """From the note's mixer (with projections), flip one key under the same seed and compare what is built."""
    base_cfg = _cfg(toep_proj=True, **NOTE)
    flip_cfg = _cfg(toep_proj=True, **{**NOTE, key: FLIPS[key]})
    torch.manual_seed(3)
    a = GPT(base_cfg).transformer.h[0].mixer
    torch.manual_seed(3)
    b = GPT(flip_cfg).transformer.h[0].mixer
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    x = torch.randn(2, 10, C, generator=torch.Generator().manual_seed(4))
    if key == "toep_proj_bias":  # only the two biases go; the rest keeps its names and shapes
        assert set(pa) - set(pb) == {"in_proj.bias", "c_proj.bias"} and not set(pb) - set(pa)
        assert all(pa[n].shape == pb[n].shape for n in pb)
        return  # its effect on the output: test_projection_biases_change_the_output_by_the_bias_maths
    assert {n: p.shape for n, p in pa.items()} == {n: p.shape for n, p in pb.items()}
    if key == "toep_init":  # raw's starting values (the normal init draws from the RNG, so later draws move too)
        assert not torch.equal(a.raw, b.raw)
        assert abs(a.raw.std().item() - 0.2) < 0.05 and torch.allclose(b.raw.sum(dim=1), torch.ones(H))
        return
    assert all(torch.equal(pa[n], pb[n]) for n in pa)  # same parameters, same values
    with torch.no_grad():
        ya, yb = a(x), b(x)
        xi = a.in_proj(x).double()
    if key == "toep_filter":  # the same raw, read as exp(raw)
        assert torch.equal(b.filters(), torch.exp(a.raw))
        want = b.c_proj(_by_hand(xi, torch.exp(a.raw.detach()).double(), False).float())
    else:  # toep_mean: the same sum, divided by the cumulative filter sum
        want = b.c_proj(_by_hand(xi, a.raw.detach().double(), True).float())
    assert not torch.allclose(ya, yb)
    assert torch.allclose(yb, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "ov",
    [dict(), dict(toep_mean=True, toep_proj=True), dict(toep_filter="exp", toep_init="ema")],
    ids=["note_plain", "note_mean_proj", "exp_ema"],
)
@pytest.mark.parametrize("path", ["parallel", "sequential"])
def test_uncached_generation_picks_the_same_tokens(ov, path):
    """generate(use_cache=False) reruns the whole context each step (the note's uncached baseline): the same greedy
    tokens as the cached path and as repeated full forwards."""
    cfg = _cfg(n_layer=2, **ov)
    model = build(cfg, seed=5)
    prompt = tokens(cfg, 2, 3, seed=5)
    with torch.no_grad():
        cached = model.generate(prompt, 8, temperature=0, mixer_path=path)
        uncached = model.generate(prompt, 8, temperature=0, mixer_path=path, use_cache=False)
        ref = prompt
        for _ in range(8):
            ref = torch.cat([ref, model(ref, mixer_path=path)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(uncached, ref) and torch.equal(cached, ref)


def test_unknown_filter_or_init_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"toep_filter='cubic'.*linear, exp"):
        _cfg(toep_filter="cubic")
    with pytest.raises(ValueError, match=r"toep_init='zeros'.*normal, ema"):
        _cfg(toep_init="zeros")
