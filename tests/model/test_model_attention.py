"""Attention specifics: backends agree, nano heads have no RoPE, softmax1 is really softmax1 (and the
reference would catch the classic zero-key bug), flash attention fails clearly where it cannot run,
the logit softcap, and the public softmax1 function."""

import importlib.util
import math
import re
from dataclasses import replace

import pytest
import torch
from model_helpers import ATTENTION, BASE, build, tokens
from model_reference import (
    F64,
    attend_loop,
    attend_softmax1_zero_key_topleft,
    cfg_split,
    reference_logits,
    softmax1_formula,
)

from trainables.model import GPT, GPTConfig, softmax1

ATOL = 1e-6  # logits here are O(5) (softcap 15, lm_head ~ 1/sqrt(C)); float32 RoPE tables alone give ~1e-7


def _load_same_weights(src: GPT, cfg: GPTConfig, dtype=F64) -> GPT:
    dst = GPT(cfg).to(dtype)
    dst.load_state_dict(src.state_dict())
    dst.eval()
    return dst


# ---------------------------------------------------------------------------------------------- backends


@pytest.mark.parametrize("name", list(ATTENTION))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_sdpa_and_manual_backends_agree(name, dtype):
    cfg = GPTConfig(**{**BASE, **ATTENTION[name], "attn_backend": "sdpa"})
    a = build(cfg, seed=11, dtype=dtype)
    b = _load_same_weights(a, replace(cfg, attn_backend="manual"), dtype)
    idx = tokens(cfg, 2, 20)
    with torch.no_grad():
        la, lb = a(idx), b(idx)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert (la - lb).abs().max().item() < tol


def test_flash_backend_is_a_valid_config():
    GPTConfig(**BASE, attn_backend="flash")  # accepted at construction; failure comes when it cannot run


@pytest.mark.skipif(
    torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None,
    reason="flash-attn and CUDA are present: the flash path can run here",
)
def test_flash_backend_without_flash_attn_or_cuda_raises_clearly():
    cfg = GPTConfig(**BASE, attn_backend="flash")
    with pytest.raises((RuntimeError, ValueError)) as info:
        model = GPT(cfg)
        model(tokens(cfg, 1, 8))
    assert re.search(r"flash[-_ ]?attn", str(info.value), re.I), f"message does not mention flash-attn: {info.value}"


@pytest.mark.skipif(
    not (torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None),
    reason="needs CUDA and flash-attn",
)
@pytest.mark.parametrize("name", ["attn", "nano_gqa", "softmax1_nano_gqa"])
def test_flash_matches_sdpa_on_cuda(name):
    cfg = GPTConfig(**{**BASE, **ATTENTION[name], "attn_backend": "sdpa"})
    a = build(cfg, seed=12, dtype=torch.float32).cuda()
    b = GPT(replace(cfg, attn_backend="flash")).cuda()
    b.load_state_dict(a.state_dict())
    b.eval()
    idx = tokens(cfg, 2, 32).cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        la, lb = a(idx).float(), b(idx).float()
    assert (la - lb).abs().max().item() < 5e-2


# ---------------------------------------------------------------------------------------------- nano heads


@pytest.mark.parametrize("name", ["nano", "nano_d2", "nano_gqa"])
def test_nano_heads_get_no_rope(name):
    """The model matches the reference without RoPE on nano heads and differs from one with it."""
    cfg = GPTConfig(**{**BASE, **ATTENTION[name]})
    assert cfg_split(cfg).n_nano > 0
    model = build(cfg, seed=13)
    idx = tokens(cfg, 2, 20)
    with torch.no_grad():
        got = model(idx)
    right = reference_logits(model, cfg, idx)
    wrong = reference_logits(model, cfg, idx, rope_on_nano=True)
    assert (wrong - right).abs().max().item() > 1e-3, "test is blind: RoPE on nano heads changes nothing"
    assert (got - right).abs().max().item() < ATOL
    assert (got - wrong).abs().max().item() > 1e-3


def test_nano_heads_matter():
    """Sanity of the layout: scrambling the nano part of c_q changes the output (nano heads are used)."""
    cfg = GPTConfig(**{**BASE, **ATTENTION["nano"]})
    sp = cfg_split(cfg)
    model = build(cfg, seed=14)
    idx = tokens(cfg, 2, 16)
    with torch.no_grad():
        a = model(idx)
        model.transformer.h[0].mixer.c_q.weight[sp.n_normal * sp.normal_dim :].mul_(-3.0)
        b = model(idx)
    assert (a - b).abs().max().item() > 1e-4


def test_head_projection_shapes():
    for name in ("attn", "gqa", "mqa", "nano", "nano_gqa", "nano_d2"):
        cfg = GPTConfig(**{**BASE, **ATTENTION[name]})
        sp = cfg_split(cfg)
        attn = GPT(cfg).transformer.h[0].mixer
        kv = sp.n_kv_normal * sp.normal_dim + sp.n_kv_nano * sp.nano_dim
        assert tuple(attn.c_q.weight.shape) == (cfg.n_embd, cfg.n_embd), name
        assert tuple(attn.c_k.weight.shape) == (kv, cfg.n_embd), name
        assert tuple(attn.c_v.weight.shape) == (kv, cfg.n_embd), name
        assert tuple(attn.c_proj.weight.shape) == (cfg.n_embd, cfg.n_embd), name


# ---------------------------------------------------------------------------------------------- softmax1


@pytest.mark.parametrize("name", ["softmax1", "softmax1_nano_gqa"])
def test_softmax1_changes_the_model(name):
    """Same weights, softmax1 on vs off: logits differ, and each matches its own reference."""
    cfg1 = GPTConfig(**{**BASE, **ATTENTION[name]})
    cfg0 = replace(cfg1, softmax1=False)
    m1 = build(cfg1, seed=15)
    m0 = _load_same_weights(m1, cfg0)
    idx = tokens(cfg1, 2, 20)
    with torch.no_grad():
        l1, l0 = m1(idx), m0(idx)
    assert (l1 - l0).abs().max().item() > 1e-3, "softmax1=True gives the same logits as softmax"
    assert (l1 - reference_logits(m1, cfg1, idx, kind="softmax1")).abs().max().item() < ATOL
    assert (l0 - reference_logits(m0, cfg0, idx, kind="softmax")).abs().max().item() < ATOL


def test_reference_softmax1_attention_is_the_formula():
    """The loop reference equals exp(s_i) / (1 + sum_{j<=t} exp(s_j)) computed as a masked matrix."""
    g = torch.Generator().manual_seed(0)
    B, T, H, d = 2, 7, 2, 4
    q, k, v = (torch.randn(B, T, H, d, generator=g, dtype=F64) for _ in range(3))
    s = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(d)
    e = torch.exp(s) * torch.tril(torch.ones(T, T, dtype=F64))
    w = e / (1 + e.sum(-1, keepdim=True))
    want = torch.einsum("bhts,bshd->bthd", w, v)
    assert torch.allclose(attend_loop(q, k, v, "softmax1"), want, atol=1e-12)
    assert (w.sum(-1) < 1).all()


def test_reference_catches_zero_key_topleft_bug():
    """A softmax1 built by prepending a zero key under SDPA's is_causal=True (top-left mask) drops each
    query's own key. At the head level it differs from the formula, and at the model level the logits
    it would produce differ from the correct reference by far more than the test tolerance."""
    g = torch.Generator().manual_seed(1)
    B, T, H, d = 2, 6, 2, 8
    q, k, v = (torch.randn(B, T, H, d, generator=g, dtype=F64) for _ in range(3))
    right = attend_loop(q, k, v, "softmax1")
    buggy = attend_softmax1_zero_key_topleft(q, k, v)
    assert (right - buggy).abs().max().item() > 1e-2
    # the zero key with the correct (bottom-right) mask *is* softmax1: the bug is the mask, not the trick
    kz = torch.cat([torch.zeros(B, 1, H, d, dtype=F64), k], 1).transpose(1, 2)
    vz = torch.cat([torch.zeros(B, 1, H, d, dtype=F64), v], 1).transpose(1, 2)
    mask = torch.ones(T, T + 1, dtype=torch.bool).tril(diagonal=1)
    fixed = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), kz, vz, attn_mask=mask).transpose(1, 2)
    assert torch.allclose(fixed, right, atol=1e-12)

    cfg = GPTConfig(**{**BASE, **ATTENTION["softmax1_nano_gqa"]})
    model = build(cfg, seed=16)
    idx = tokens(cfg, 2, 16)
    good = reference_logits(model, cfg, idx)
    bad = reference_logits(model, cfg, idx, attend=attend_softmax1_zero_key_topleft)
    assert (good - bad).abs().max().item() > 1e3 * ATOL
    with torch.no_grad():
        got = model(idx)
    assert (got - bad).abs().max().item() > 1e3 * ATOL, "the model reproduces the zero-key top-left bug"


def test_softmax1_function_matches_formula():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 7, generator=g, dtype=F64) * 3
    for dim in (-1, 0, 1):
        assert torch.allclose(softmax1(x, dim=dim), softmax1_formula(x, dim=dim), atol=1e-13, rtol=1e-12), dim
    x32 = x.float()
    assert softmax1(x32, dim=-1).dtype == torch.float32
    assert torch.allclose(softmax1(x32, dim=-1).double(), softmax1_formula(x, dim=-1), atol=1e-6)
    s = softmax1(x, dim=-1).sum(-1)
    assert ((s > 0) & (s < 1)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax1_function_is_stable_on_large_inputs(dtype):
    x = torch.tensor(
        [[1000.0, 1000.0, 0.0], [1000.0, 999.0, -1000.0], [-1000.0, -1000.0, -1000.0], [0.0, 0.0, 0.0]], dtype=dtype
    )
    y = softmax1(x, dim=-1).double()
    assert torch.isfinite(y).all(), y
    e = math.exp(-1.0)
    want = torch.tensor(
        [[0.5, 0.5, 0.0], [1 / (1 + e), e / (1 + e), 0.0], [0.0, 0.0, 0.0], [0.25, 0.25, 0.25]], dtype=F64
    )
    assert torch.allclose(y, want, atol=1e-6), y
    xg = (x.float() * 1.0).requires_grad_(True)
    softmax1(xg, dim=-1)[:, 0].sum().backward()
    assert torch.isfinite(xg.grad).all()


def test_softmax1_function_masked_entries():
    x = torch.tensor([[float("-inf"), 0.0], [float("-inf"), float("-inf")]])
    y = softmax1(x, dim=-1)
    assert torch.allclose(y, torch.tensor([[0.0, 0.5], [0.0, 0.0]])), y


# ---------------------------------------------------------------------------------------------- softcap


@pytest.mark.parametrize("cap", [15.0, 5.0, None, 0.0])
def test_logit_softcap(cap):
    """A large lm_head pushes raw logits far past the cap: the model must follow c*tanh(l/c) (or no cap)."""
    cfg = GPTConfig(**BASE, logit_softcap=cap)
    model = build(cfg, seed=17)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    idx = tokens(cfg, 2, 12)
    with torch.no_grad():
        got = model(idx)
    ref = reference_logits(model, cfg, idx)
    assert (got - ref).abs().max().item() < 1e-6 * max(1.0, ref.abs().max().item())
    if cap:
        assert got.abs().max().item() <= cap
        assert got.abs().max().item() > 0.9 * cap
    else:
        assert got.abs().max().item() > 20.0


def test_tied_embeddings_share_one_tensor():
    cfg = GPTConfig(**BASE, tie_embeddings=True)
    model = GPT(cfg)
    assert model.lm_head.weight is model.transformer.wte.weight
    untied = GPT(GPTConfig(**BASE))
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert tuple(untied.lm_head.weight.shape) == (cfg.vocab_size, cfg.n_embd)
    assert untied.lm_head.bias is None


def test_no_biases_anywhere():
    # nanochat's GPT has none; the Toeplitz note's projections are nn.Linear with bias (toep_proj_bias) unless turned off
    for ov in (
        dict(),
        dict(nanohead_proportion=0.25),
        dict(mixer="toeplitz", toep_proj=True, toep_mean=True, toep_proj_bias=False),
    ):
        model = GPT(GPTConfig(**BASE, **ov))
        biases = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.bias is not None]
        assert not biases, biases


@pytest.mark.parametrize(
    "ov",
    [dict(), dict(nanohead_proportion=0.25, softmax1=True), dict(mixer="toeplitz", toep_mean=True, toep_proj=True)],
    ids=["attention", "nano_softmax1", "toeplitz"],
)
def test_dropout_only_in_training(ov):
    cfg = GPTConfig(**BASE, dropout=0.5, **ov)
    model = build(cfg, seed=18)
    idx = tokens(cfg, 2, 12)
    with torch.no_grad():
        ev = model(idx)
        assert (ev - reference_logits(model, cfg, idx)).abs().max().item() < ATOL
        model.train()
        tr = model(idx)
    assert (tr - ev).abs().max().item() > 1e-3, "dropout=0.5 has no effect in train mode"
