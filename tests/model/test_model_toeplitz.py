"""The Toeplitz mixer on its own: both paths against the O(S^2) sum at short and long lengths (the long
one is past the FFT switch), paths agree in float32, causality at long length (no circular wrap-around),
positivity of the mean's weights, and the projection switch."""

import pytest
import torch
from model_helpers import build
from model_reference import F64, toeplitz_loop, toeplitz_matrix, toeplitz_projections

from trainables.model import GPT, GPTConfig

LONG = 600  # the contract's example of a long sequence (> the lead's FFT switch)
VERY_LONG = 1100  # past 1024 as well, in case the switch moves


def _mixer(mean: bool, proj: bool, seq_len: int, dtype=F64, seed: int = 0, **more):
    cfg = GPTConfig(
        vocab_size=64,
        n_layer=1,
        n_embd=16,
        n_head=4,
        seq_len=seq_len,
        mixer="toeplitz",
        toep_mean=mean,
        toep_proj=proj,
        **more,
    )
    model = build(cfg, seed=seed, dtype=dtype)
    return cfg, model.transformer.h[0].mixer


def _naive(mixer, cfg, x):
    inp, out = toeplitz_projections(mixer)
    x = x.to(F64)
    if cfg.toep_proj:
        x = x @ inp.weight.detach().to(F64).T + (inp.bias.detach().to(F64) if cfg.toep_proj_bias else 0)
    w = mixer.filters().detach().to(F64)
    y = toeplitz_loop(x, w, cfg.toep_mean) if x.shape[1] <= 24 else toeplitz_matrix(x, w, cfg.toep_mean)
    if cfg.toep_proj:
        y = y @ out.weight.detach().to(F64).T + (out.bias.detach().to(F64) if cfg.toep_proj_bias else 0)
    return y


def test_reference_loop_equals_reference_matrix():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, 8, generator=g, dtype=F64)
    w = torch.rand(2, 20, generator=g, dtype=F64) + 0.1
    for mean in (False, True):
        assert torch.allclose(toeplitz_loop(x, w, mean), toeplitz_matrix(x, w, mean), atol=1e-12)


@pytest.mark.parametrize("T", [16, LONG, VERY_LONG])
@pytest.mark.parametrize("path", ["parallel", "sequential"])
@pytest.mark.parametrize(
    "mean,proj",
    [(False, False), (False, True), (True, False), (True, True)],
    ids=["nomean_noproj", "nomean_proj", "mean_noproj", "mean_proj"],
)
def test_mixer_matches_naive_sum(T, path, mean, proj):
    cfg, mixer = _mixer(mean, proj, seq_len=max(T, 32), seed=T)
    x = torch.randn(2, T, cfg.n_embd, generator=torch.Generator().manual_seed(T), dtype=F64)
    with torch.no_grad():
        got = mixer(x, path=path)
    want = _naive(mixer, cfg, x)
    err = (got - want).abs().max().item()
    assert err < 1e-9 * max(1.0, want.abs().max().item()), f"T={T} {path}: max err {err:.3e}"


@pytest.mark.parametrize("T", [16, LONG])
@pytest.mark.parametrize("mean", [False, True])
def test_paths_agree_in_float32(T, mean):
    cfg, mixer = _mixer(mean, True, seq_len=T, dtype=torch.float32, seed=3)
    x = torch.randn(2, T, cfg.n_embd, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = mixer(x, path="parallel")
        b = mixer(x, path="sequential")
    assert (a - b).abs().max().item() < 1e-5


@pytest.mark.parametrize("mean", [False, True])
def test_long_sequence_is_causal(mean):
    """A circular (un-padded) FFT convolution would leak the end of the sequence into its start."""
    T = LONG
    cfg, mixer = _mixer(mean, False, seq_len=T, seed=4)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, T, cfg.n_embd, generator=g, dtype=F64)
    x2 = x.clone()
    x2[:, 400:] = torch.randn(1, T - 400, cfg.n_embd, generator=g, dtype=F64) * 100
    for path in ("parallel", "sequential"):
        with torch.no_grad():
            a, b = mixer(x, path=path), mixer(x2, path=path)
        assert (a[:, :400] - b[:, :400]).abs().max().item() < 1e-9, path


def test_mean_weights_positive_by_construction():
    """With toep_filter="exp", however the raw parameters move, the mean's weights stay > 0 and outputs stay finite."""
    cfg, mixer = _mixer(True, False, seq_len=64, seed=5, toep_filter="exp")
    with torch.no_grad():
        for p in mixer.parameters():  # the filter parameters (no projections here)
            p.fill_(-5.0)
        w = mixer.filters()
        assert (w > 0).all()
        x = torch.randn(1, 64, cfg.n_embd, dtype=F64)
        y = mixer(x)
        assert torch.isfinite(y).all()
        assert torch.allclose(y, _naive(mixer, cfg, x), atol=1e-9)
        for p in mixer.parameters():
            p.copy_(torch.linspace(-8, 8, p.numel(), dtype=p.dtype).reshape(p.shape))
        assert (mixer.filters() > 0).all()
        # a constant input is a fixed point of a weighted mean
        c = torch.ones(1, 64, cfg.n_embd, dtype=F64) * 3.0
        assert torch.allclose(mixer(c), c, atol=1e-9)


def test_filters_shape_and_grad():
    for mean in (False, True):
        cfg, mixer = _mixer(mean, False, seq_len=40, dtype=torch.float32)
        w = mixer.filters()
        assert tuple(w.shape) == (cfg.n_head, cfg.seq_len)
        assert w.requires_grad, "filters() must be a function of the trainable parameters"


@pytest.mark.parametrize("proj", [False, True])
def test_projection_switch(proj):
    cfg = GPTConfig(vocab_size=64, n_layer=2, n_embd=16, n_head=4, seq_len=32, mixer="toeplitz", toep_proj=proj)
    model = GPT(cfg)
    for block in model.transformer.h:
        lins = [m for m in block.mixer.modules() if isinstance(m, torch.nn.Linear)]
        assert len(lins) == (2 if proj else 0)
        assert not hasattr(block.mixer, "c_q"), "the Toeplitz mixer replaces attention entirely"


def test_unknown_path_rejected():
    cfg, mixer = _mixer(False, False, seq_len=16)
    with pytest.raises(ValueError, match="path"):
        mixer(torch.zeros(1, 4, cfg.n_embd, dtype=F64), path="diagonal")


@pytest.mark.parametrize("path", ["parallel", "sequential"])
@pytest.mark.parametrize(
    "mean,proj",
    [(False, False), (False, True), (True, False), (True, True)],
    ids=["nomean_noproj", "nomean_proj", "mean_noproj", "mean_proj"],
)
def test_whole_model_long_sequence_matches_reference(path, mean, proj):
    """The full GPT at T=600 (past the FFT switch) against the float64 reference with the O(S^2) sum."""
    from model_helpers import tokens
    from model_reference import reference_logits

    cfg = GPTConfig(
        vocab_size=64, n_layer=2, n_embd=16, n_head=4, seq_len=LONG, mixer="toeplitz", toep_mean=mean, toep_proj=proj
    )
    model = build(cfg, seed=21)
    idx = tokens(cfg, 1, LONG)
    with torch.no_grad():
        got = model(idx, mixer_path=path)
    ref = reference_logits(model, cfg, idx)
    assert (got - ref).abs().max().item() < 1e-6 * max(1.0, ref.abs().max().item())
