"""The probes against constructed cases with known answers: statistics on planted outliers, receptive
fields of one-hot and uniform filters, hand-wired previous-token / first-token / attend-to-nothing heads,
attention probabilities that reproduce the model's own attention output, W8A8 on exactly representable
weights and activations, head ablation against zeroed output projections, Toeplitz effective weights
against the mixer's output, and run_probes' keys per config."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from model_helpers import BASE, build, tokens

from trainables.data import TokenData
from trainables.model import GPT, GPTConfig
from trainables.model.attention import norm
from trainables.probes import (
    activation_stats,
    attention_probs,
    head_ablation,
    head_stats,
    inf_norm,
    kurtosis,
    receptive_field,
    run_probes,
    toeplitz_filters,
    w8a8_loss,
)

F64 = torch.float64


def _no_hooks(model):
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


# ---------------------------------------------------------------------------------------------- statistics


def test_kurtosis_of_a_normal_sample_is_3():
    x = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert abs(kurtosis(x) - 3.0) < 0.05  # standard error sqrt(24/n) ~ 0.005


def test_kurtosis_of_planted_outliers_by_hand():
    # [0, 0, 0, 4]: mean 1, deviations (-1, -1, -1, 3): m2 = 12/4 = 3, m4 = 84/4 = 21 -> 21/9
    assert kurtosis(torch.tensor([0.0, 0.0, 0.0, 4.0])) == pytest.approx(7 / 3, rel=1e-12)
    # one spike of any height among N zeros: m2 = a^2 (N-1)/N^2, m4 = a^4 (N-1)((N-1)^3+1)/N^5
    # -> kurtosis = (N^2 - 3N + 3) / (N - 1), whatever a, in any shape, shifted or scaled
    N = 1000
    x = torch.zeros(10, 100)
    x[3, 17] = 50.0
    want = (N * N - 3 * N + 3) / (N - 1)
    assert kurtosis(x) == pytest.approx(want, rel=1e-9)
    assert kurtosis(-3 * x + 7) == pytest.approx(want, rel=1e-9)


def test_inf_norm_of_a_planted_outlier():
    x = torch.randn(4, 64, 32, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    x[2, 5, 7] = -37.5
    assert inf_norm(x) == 37.5


@pytest.mark.parametrize("k", [0, 1, 5, 19])
def test_receptive_field_of_one_hot_filters_is_the_lag(k):
    w = torch.zeros(20)
    w[k] = 1.0
    assert receptive_field(w) == k
    w[k] = -2.5  # |w| counts
    assert receptive_field(w) == k


def test_receptive_field_of_uniform_filters():
    for L in range(1, 41):
        assert receptive_field(torch.full((L,), 0.3)) == math.ceil(0.9 * L) - 1, L
    assert receptive_field(torch.ones(10), mass=0.5) == 4
    assert receptive_field(torch.zeros(5)) == 0


# ---------------------------------------------------------------------------------------------- wired heads

T_WIRED = 8
A = 3.0  # logit scale: logits are 8 * A^2 = 72 where wired (head dim 16, |input| = sqrt(32))


def _wired_model(*, softmax1=False, nano_attends_nothing=False) -> GPT:
    """1 layer, n_embd 32: one normal head (RoPE) and one nano head (no RoPE), both 16 wide, QK norm off.
    Token t is the one-hot e_t in the residual stream; the sequence is 0, 1, ..., T-1, so token = position.
      normal head: q_t is pre-rotated against RoPE so that after it every q_t = e_0; only token 0's key
                   is non-zero (e_0): the head attends to the first token.
      nano head:   q_t = e_t, k_s = e_{s+1}: the head attends to the previous token. With
                   nano_attends_nothing, k_s = -(e_0 + ... + e_14) instead: every logit is -72."""
    cfg = GPTConfig(
        vocab_size=16,
        n_layer=1,
        n_embd=32,
        n_head=1,
        seq_len=T_WIRED,
        nanohead_proportion=0.5,
        nanohead_dim=16,
        qk_norm=False,
        softmax1=softmax1,
    )
    model = build(cfg, seed=3)
    attn = model.transformer.h[0].mixer
    assert attn.split[:4] == (1, 16, 1, 16)
    with torch.no_grad():
        model.transformer.wte.weight.zero_()
        model.transformer.wte.weight[:, :16] = torch.eye(16, dtype=F64)
        wq, wk = attn.c_q.weight, attn.c_k.weight
        wq.zero_()
        wk.zero_()
        for t in range(15):
            wq[0, t], wq[8, t] = A * math.cos(t), A * math.sin(t)  # RoPE pair (0, 8) turns by t radians at position t
            wq[16 + t, t] = A
            if nano_attends_nothing:
                wk[16:31, t] = -A
            else:
                wk[16 + t + 1, t] = A
        wk[0, 0] = A
    return model


def _idx(B=2):
    return torch.arange(T_WIRED).repeat(B, 1)


def test_wired_heads_score_first_token_and_previous_token():
    stats = head_stats(_wired_model(), _idx())
    assert [(s["layer"], s["head"], s["kind"]) for s in stats] == [(0, 0, "normal"), (0, 1, "nano")]
    first, prev = stats
    assert first["first_token"] > 0.99 and first["entropy"] < 0.01
    assert prev["prev_token"] > 0.99 and prev["entropy"] < 0.01
    # the two share position t = 1 only (previous = first): 1 of the T-1 positions
    assert first["prev_token"] == pytest.approx(1 / (T_WIRED - 1), abs=1e-3)
    assert prev["first_token"] == pytest.approx(1 / (T_WIRED - 1), abs=1e-3)
    assert first["mass"] == pytest.approx(1.0) and prev["mass"] == pytest.approx(1.0)


def test_uniform_head_has_hand_computed_entropy_and_scores():
    """Equal logits everywhere: query t spreads 1/(t+1) over t+1 keys, entropy log(t+1)."""
    ts = range(1, T_WIRED)
    want_entropy = sum(math.log(t + 1) for t in ts) / len(ts)
    want_weight = sum(1 / (t + 1) for t in ts) / len(ts)
    nano = head_stats(_wired_model(nano_attends_nothing=True), _idx())[1]
    assert nano["entropy"] == pytest.approx(want_entropy, rel=1e-9)
    assert nano["prev_token"] == pytest.approx(want_weight, rel=1e-9)
    assert nano["first_token"] == pytest.approx(want_weight, rel=1e-9)
    assert nano["mass"] == pytest.approx(1.0, rel=1e-12)


def test_softmax1_head_can_attend_to_nothing():
    """Logits of -72 everywhere: softmax1 gives rows of mass ~ (t+1) e^-72; the renormalised row is uniform."""
    first, nano = head_stats(_wired_model(softmax1=True, nano_attends_nothing=True), _idx())
    assert nano["mass"] < 1e-20 and nano["prev_token"] < 1e-20
    ts = range(1, T_WIRED)
    assert nano["entropy"] == pytest.approx(sum(math.log(t + 1) for t in ts) / len(ts), rel=1e-6)
    assert first["mass"] > 0.99 and first["first_token"] > 0.99  # logit 72 vs the implicit 0


# ---------------------------------------------------------------------------------------------- probs vs the model

PROB_CASES = {
    "plain": {},
    "nano": dict(nanohead_proportion=0.25),
    "softmax1": dict(softmax1=True),
    "softmax1_nano_gqa": dict(softmax1=True, nanohead_proportion=0.25, n_kv_head=2),
    "gqa_no_qknorm": dict(n_kv_head=2, qk_norm=False),
    "nano_manual": dict(nanohead_proportion=0.5, nanohead_dim=2, attn_backend="manual"),
}


@pytest.mark.parametrize("name", list(PROB_CASES))
def test_attention_probs_reproduce_the_models_attention_output(name):
    """probs @ v (v recomputed from the layer input), through c_proj, equals what the module returned."""
    cfg = GPTConfig(**{**BASE, **PROB_CASES[name]})
    model = build(cfg, seed=5)
    idx = tokens(cfg, 2, 24)
    seen = {}
    handles = [
        b.mixer.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(i, (args[0], out)))
        for i, b in enumerate(model.transformer.h)
    ]
    with torch.no_grad():
        model(idx)
    for h in handles:
        h.remove()
    probs = attention_probs(model, idx)
    assert len(probs) == cfg.n_layer and _no_hooks(model)
    for i, p in enumerate(probs):
        attn = model.transformer.h[i].mixer
        s = attn.split
        x, out = seen[i]
        B, T, _ = x.shape
        assert p.shape == (B, s.n_normal + s.n_nano, T, T)
        assert torch.all(p.triu(diagonal=1) == 0)  # causal
        rows = p.sum(-1)
        if cfg.softmax1:
            assert torch.all(rows < 1) and torch.all(rows > 0)
        else:
            assert torch.allclose(rows, torch.ones_like(rows), atol=1e-12)
        with torch.no_grad():
            v = attn.c_v(x)
            w = s.n_kv_normal * s.normal_dim
            v_normal = v[..., :w].view(B, T, s.n_kv_normal, s.normal_dim).transpose(1, 2)
            v_nano = v[..., w:].view(B, T, s.n_kv_nano, s.nano_dim).transpose(1, 2)
            ys = [p[:, : s.n_normal] @ v_normal.repeat_interleave(s.n_normal // s.n_kv_normal, dim=1)]
            if s.n_nano:
                ys.append(p[:, s.n_normal :] @ v_nano.repeat_interleave(s.n_nano // s.n_kv_nano, dim=1))
            y = torch.cat([t.transpose(1, 2).reshape(B, T, -1) for t in ys], dim=-1)
            got = attn.c_proj(y)
        assert (got - out).abs().max().item() < 1e-10, f"layer {i}"


def test_attention_probes_refuse_the_toeplitz_mixer():
    cfg = GPTConfig(**BASE, mixer="toeplitz")
    model = build(cfg)
    with pytest.raises(ValueError, match="attention"):
        attention_probs(model, tokens(cfg, 1, 8))


# ---------------------------------------------------------------------------------------------- activations


def test_activation_stats_against_a_manual_pass_with_a_planted_outlier():
    cfg = GPTConfig(**BASE)
    model = build(cfg, seed=2)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_proj.weight[3] *= 1000.0  # channel 3 of the stream blows up after layer 0
    idx = tokens(cfg, 2, 16)
    stats = activation_stats(model, idx)
    # reference: the pre-norm blocks written out
    with torch.no_grad():
        x = norm(model.transformer.wte(idx))
        cos, sin = model.cos[:16], model.sin[:16]
        for i, block in enumerate(model.transformer.h):
            a = block.mixer(norm(x), cos, sin)
            x = x + a
            x = x + block.mlp(norm(x))
            assert stats[i]["layer"] == i
            assert stats[i]["attn_inf_norm"] == pytest.approx(a.abs().max().item(), rel=1e-12)
            assert stats[i]["resid_inf_norm"] == pytest.approx(x.abs().max().item(), rel=1e-12)
            assert stats[i]["attn_kurtosis"] == pytest.approx(kurtosis(a), rel=1e-9)
            assert stats[i]["resid_kurtosis"] == pytest.approx(kurtosis(x), rel=1e-9)
    assert stats[0]["resid_inf_norm"] > 100 and stats[0]["resid_kurtosis"] > 20
    assert _no_hooks(model)


# ---------------------------------------------------------------------------------------------- W8A8


def _representable_model() -> GPT:
    """Every Linear weight is an integer multiple of 2^-7 with max |w| exactly 127 * 2^-7 (scale 2^-7: the
    fake quantization is the identity on it), and, on a sequence repeating one token, every Linear input
    has entries of one magnitude (or 0), so it is representable too: the token is the sign vector s,
    c_v = r P and c_proj = r P^T (P a signed permutation, r = 127/128) put r^2 * input back along s; the
    MLP's c_fc picks +-s_i so all hidden units are equal and positive, and its c_proj maps them to r s."""
    C = 8
    cfg = GPTConfig(vocab_size=4, n_layer=1, n_embd=C, n_head=2, seq_len=8, mlp_ratio=4.0)
    model = build(cfg, seed=7)
    g = torch.Generator().manual_seed(7)
    r = 127 / 128
    s = torch.tensor([1, -1, -1, 1, 1, 1, -1, 1], dtype=F64)
    perm = torch.randperm(C, generator=g)
    P = torch.zeros(C, C, dtype=F64)
    P[torch.arange(C), perm] = torch.where(torch.rand(C, generator=g) > 0.5, 1.0, -1.0).to(F64)

    def ints(shape):
        w = torch.randint(-127, 128, shape, generator=g).to(F64)
        w.view(-1)[0] = 127
        return w / 128

    attn, mlp = model.transformer.h[0].mixer, model.transformer.h[0].mlp
    with torch.no_grad():
        model.transformer.wte.weight.copy_(torch.where(torch.rand(4, C, generator=g) > 0.5, 1.0, -1.0))
        model.transformer.wte.weight[1] = s
        attn.c_q.weight.copy_(ints((C, C)))
        attn.c_k.weight.copy_(ints((C, C)))
        attn.c_v.weight.copy_(r * P)
        attn.c_proj.weight.copy_(r * P.T)
        mlp.c_fc.weight.zero_()
        mlp.c_proj.weight.zero_()
        for j in range(cfg.mlp_hidden):
            mlp.c_fc.weight[j, j % C] = r * s[j % C]
        for i in range(C):
            mlp.c_proj.weight[i, i] = r * s[i]
        model.lm_head.weight.copy_(ints((4, C)))
    return model


def test_w8a8_is_exact_when_weights_and_activations_are_representable():
    model = _representable_model()
    idx = torch.full((2, 8), 1)
    targets = torch.randint(0, 4, (2, 8), generator=torch.Generator().manual_seed(0))
    fp, q = w8a8_loss(model, idx, targets)
    assert fp > 0.1
    assert abs(q - fp) < 1e-12


def test_w8a8_changes_a_random_model_a_little_and_leaves_it_unchanged():
    cfg = GPTConfig(**BASE)
    model = build(cfg, seed=1)
    before = copy.deepcopy(model.state_dict())
    idx, targets = tokens(cfg, 2, 32, seed=1), tokens(cfg, 2, 32, seed=2)
    with torch.no_grad():
        base = model(idx, targets).item()
    fp, q = w8a8_loss(model, idx, targets)
    assert fp == pytest.approx(base, rel=1e-12)
    assert 0 < abs(q - fp) < 0.05 * fp
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert _no_hooks(model)
    with torch.no_grad():
        assert model(idx, targets).item() == base


class _Int8Linear(torch.nn.Linear):
    """Reference W8A8 linear: weight and input each round-tripped through real int8 tensors, per-tensor scale."""

    @staticmethod
    def _q(x):
        s = x.abs().max() / 127
        if s == 0:
            return x
        return torch.clamp(torch.round(x / s), -127, 127).to(torch.int8).to(x.dtype) * s

    def forward(self, x):
        return torch.nn.functional.linear(
            self._q(x), self._q(self.weight), self.bias
        )  # a bias (Toeplitz projections) stays float


def _swap_linears(module):
    for _name, child in module.named_children():
        if type(child) is torch.nn.Linear:
            child.__class__ = _Int8Linear
        else:
            _swap_linears(child)


@pytest.mark.parametrize(
    "overrides",
    [{}, dict(nanohead_proportion=0.25, softmax1=True), dict(mixer="toeplitz", toep_proj=True)],
    ids=["plain", "nano_softmax1", "toeplitz_proj"],
)
def test_w8a8_matches_a_reference_with_int8_linear_modules(overrides):
    cfg = GPTConfig(**{**BASE, **overrides})
    model = build(cfg, seed=3)
    idx, targets = tokens(cfg, 2, 32, seed=3), tokens(cfg, 2, 32, seed=4)
    ref = copy.deepcopy(model)
    _swap_linears(ref)
    fp, q = w8a8_loss(model, idx, targets)
    assert q == pytest.approx(_loss(ref, idx, targets), abs=1e-10)
    assert abs(q - fp) > 1e-6


def test_w8a8_quantizes_activations_too():
    """Representable weights, but a mixed-token sequence: activations are no longer on the int8 grid."""
    model = _representable_model()
    idx = torch.tensor([[1, 0, 2, 3, 1, 1, 0, 2]])
    fp, q = w8a8_loss(model, idx, idx.roll(-1, 1))
    assert abs(q - fp) > 1e-6


# ---------------------------------------------------------------------------------------------- ablation


def _loss(model, idx, targets):
    with torch.no_grad():
        return model(idx, targets).item()


def test_ablating_a_head_with_zero_output_columns_costs_nothing():
    cfg = GPTConfig(**BASE)
    model = build(cfg, seed=4)
    hd = cfg.n_embd // cfg.n_head
    with torch.no_grad():
        model.transformer.h[1].mixer.c_proj.weight[:, 2 * hd : 3 * hd] = 0  # layer 1, head 2
    idx, targets = tokens(cfg, 2, 16), tokens(cfg, 2, 16, seed=9)
    res = head_ablation(model, idx, targets)
    assert len(res) == cfg.n_layer * cfg.n_head
    by = {(r["layer"], r["head"]): r["loss_increase"] for r in res}
    assert abs(by[(1, 2)]) < 1e-12
    assert all(abs(v) > 1e-6 for k, v in by.items() if k != (1, 2))
    assert _no_hooks(model)


def test_ablating_the_only_head_equals_zeroing_the_attention_output():
    cfg = GPTConfig(**{**BASE, "n_head": 1, "n_layer": 3})
    model = build(cfg, seed=6)
    idx, targets = tokens(cfg, 2, 16), tokens(cfg, 2, 16, seed=8)
    base = _loss(model, idx, targets)
    res = head_ablation(model, idx, targets)
    assert [(r["layer"], r["head"], r["kind"]) for r in res] == [(i, 0, "normal") for i in range(3)]
    for r in res:
        ref = copy.deepcopy(model)
        with torch.no_grad():
            ref.transformer.h[r["layer"]].mixer.c_proj.weight.zero_()
        assert r["loss_increase"] == pytest.approx(_loss(ref, idx, targets) - base, abs=1e-12)


def test_nano_head_ablation_zeroes_that_heads_output_columns():
    """Layout: normal heads (normal_dim wide) first, then nano heads (nano_dim wide), in c_proj's input."""
    cfg = GPTConfig(**{**BASE, "nanohead_proportion": 0.25, "n_layer": 1})  # 4 normal x 10, 8 nano x 3
    model = build(cfg, seed=12)
    idx, targets = tokens(cfg, 2, 16), tokens(cfg, 2, 16, seed=3)
    base = _loss(model, idx, targets)
    res = head_ablation(model, idx, targets)
    assert [r["kind"] for r in res] == ["normal"] * 4 + ["nano"] * 8
    cols = [range(10 * h, 10 * h + 10) for h in range(4)] + [range(40 + 3 * j, 43 + 3 * j) for j in range(8)]
    for r in res:
        ref = copy.deepcopy(model)
        with torch.no_grad():
            ref.transformer.h[0].mixer.c_proj.weight[:, list(cols[r["head"]])] = 0
        assert r["loss_increase"] == pytest.approx(_loss(ref, idx, targets) - base, abs=1e-12)


@pytest.mark.parametrize(
    "overrides",
    [{}, dict(tie_embeddings=True, logit_softcap=None), dict(nanohead_proportion=0.25, n_kv_head=2, softmax1=True)],
    ids=["plain", "tied_nocap", "nano_gqa_softmax1"],
)
def test_ablation_fast_path_reproduces_the_models_loss(overrides):
    """head_ablation reruns only the layers from the ablated one on; that shortcut must equal the model."""
    from trainables.probes import _block_inputs, _loss_from_layer

    cfg = GPTConfig(**{**BASE, **overrides})
    model = build(cfg, seed=2)
    idx, targets = tokens(cfg, 2, 16), tokens(cfg, 2, 16, seed=5)
    with torch.no_grad():
        inputs, loss = _block_inputs(model, idx, targets)
        assert loss == _loss(model, idx, targets)
        assert _loss_from_layer(model, inputs, 0, targets) == loss


def test_head_ablation_caps_heads_with_a_fixed_sample_of_both_kinds():
    cfg = GPTConfig(**{**BASE, "nanohead_proportion": 0.25})  # 2 layers x (4 normal + 8 nano)
    model = build(cfg, seed=2)
    idx, targets = tokens(cfg, 1, 8), tokens(cfg, 1, 8, seed=4)
    a = head_ablation(model, idx, targets, max_heads=6)
    b = head_ablation(model, idx, targets, max_heads=6)
    assert a == b and len(a) == 6
    assert sum(r["kind"] == "nano" for r in a) == 3 and sum(r["kind"] == "normal" for r in a) == 3


# ---------------------------------------------------------------------------------------------- Toeplitz


def test_toeplitz_one_hot_filters_have_their_lag_as_receptive_field():
    cfg = GPTConfig(**{**BASE, "mixer": "toeplitz"})  # no mean: the filter is the raw weights
    model = build(cfg)
    lags = [[0, 3, 7, 31], [1, 2, 30, 5]]
    with torch.no_grad():
        for i, layer_lags in enumerate(lags):
            raw = model.transformer.h[i].mixer.raw
            raw.zero_()
            for h, k in enumerate(layer_lags):
                raw[h, k] = 0.7
    res = toeplitz_filters(model)
    assert [(f["layer"], f["head"]) for f in res] == [(i, h) for i in range(2) for h in range(4)]
    for f in res:
        k = lags[f["layer"]][f["head"]]
        assert f["receptive_field"] == k
        assert (
            f["filter"] == f["effective"] and f["filter"][k] == pytest.approx(0.7) and len(f["filter"]) == cfg.seq_len
        )


def test_toeplitz_mean_effective_weights_are_what_the_mixer_applies_at_the_last_position():
    cfg = GPTConfig(**{**BASE, "mixer": "toeplitz", "toep_mean": True, "n_layer": 1})
    model = build(cfg, seed=8)
    mixer = model.transformer.h[0].mixer
    f = toeplitz_filters(model)
    T = cfg.seq_len
    x = torch.randn(1, T, cfg.n_embd, generator=torch.Generator().manual_seed(0), dtype=F64)
    with torch.no_grad():
        y = mixer(x)[0, -1]  # [C]
    hd = cfg.n_embd // cfg.n_head
    for h in range(cfg.n_head):
        eff = torch.tensor(f[h]["effective"], dtype=F64)
        want = (eff[:, None] * x[0].flip(0)[:, h * hd : (h + 1) * hd]).sum(0)  # sum_k eff[k] x_{T-1-k}
        assert torch.allclose(y[h * hd : (h + 1) * hd], want, atol=1e-12)
        assert torch.tensor(f[h]["filter"], dtype=F64).allclose(mixer.filters()[h].detach())
        assert eff.sum().item() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- run_probes

COMMON = {
    "probe_max_inf_norm",
    "probe_max_kurtosis",
    "probe_attn_max_inf_norm",
    "probe_attn_max_kurtosis",
    "probe_fp_loss",
    "probe_w8a8_loss",
    "probe_w8a8_delta",
}
ATTN = {
    "probe_sink_mass",
    "probe_attn_mass",
    "probe_normal_prev_token",
    "probe_normal_entropy",
    "probe_normal_ablation",
}
NANO = {"probe_nano_prev_token", "probe_nano_entropy", "probe_nano_ablation"}
TOEP = {"probe_receptive_field_mean", "probe_receptive_field_max"}
RUN_CASES = {
    "plain": ({}, COMMON | ATTN),
    "nano": (dict(nanohead_proportion=0.4), COMMON | ATTN | NANO),
    "softmax1": (dict(softmax1=True), COMMON | ATTN),
    "toeplitz_mean_proj": (dict(mixer="toeplitz", toep_mean=True, toep_proj=True), COMMON | TOEP),
}


@pytest.fixture(scope="module")
def val_data(tmp_path_factory) -> TokenData:
    """A TokenData whose val split is 2000 random tokens (only the val split is read)."""
    d = tmp_path_factory.mktemp("probe_tokens")
    np.random.default_rng(0).integers(0, BASE["vocab_size"], 2000).astype(np.uint16).tofile(d / "val.bin")
    return TokenData(
        train_path=d / "train.bin",
        val_path=d / "val.bin",
        meta_path=d / "meta.json",
        token_bytes_path=d / "token_bytes.npy",
        vocab_size=BASE["vocab_size"],
        dtype="uint16",
        n_train_tokens=0,
        n_val_tokens=2000,
        tokenizer="test",
        corpus_fingerprint="test",
        bos_id=0,
        n_train_bytes=0,
        n_val_bytes=0,
    )


@pytest.mark.parametrize("name", list(RUN_CASES))
def test_run_probes_gives_finite_scalars_and_json_details(name, val_data):
    overrides, keys = RUN_CASES[name]
    cfg = GPTConfig(**{**BASE, **overrides})
    torch.manual_seed(0)
    model = GPT(cfg)  # float32, the model's own init
    model.train()
    scalars, details = run_probes(model, val_data, cfg.seq_len, batch_size=4, batches=2)
    assert set(scalars) == keys
    assert all(isinstance(v, float) and math.isfinite(v) for v in scalars.values()), scalars
    assert scalars["probe_w8a8_delta"] == pytest.approx(scalars["probe_w8a8_loss"] - scalars["probe_fp_loss"])
    json.dumps(details, allow_nan=False)
    assert len(details["activations"]) == cfg.n_layer and details["tokens"] == 8 * cfg.seq_len
    if cfg.mixer == "attention":
        assert "heads" in details and "ablation" in details and "filters" not in details
        if cfg.softmax1:
            assert 0 < scalars["probe_attn_mass"] < 1
        else:
            assert scalars["probe_attn_mass"] == pytest.approx(1.0)
        assert details["ablated_heads"] == details["total_heads"] == len(details["heads"])
    else:
        assert "filters" in details and "heads" not in details
    assert model.training and _no_hooks(model)


def test_head_stats_are_the_same_when_the_batch_is_chunked(monkeypatch):
    import trainables.probes as probes

    cfg = GPTConfig(**{**BASE, "nanohead_proportion": 0.25})
    model = build(cfg, seed=1)
    idx = tokens(cfg, 3, 16)
    whole = head_stats(model, idx)
    monkeypatch.setattr(probes, "PROBS_CHUNK_BYTES", 1)  # one sequence per chunk
    chunked = head_stats(model, idx)
    for a, b in zip(whole, chunked):
        assert a.keys() == b.keys()
        for k in ("entropy", "prev_token", "first_token", "mass"):
            assert a[k] == pytest.approx(b[k], rel=1e-12), k
