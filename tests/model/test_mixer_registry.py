"""The mixer registry and its contract: a causal depthwise convolution registered as a mixer passes check_mixer and
trains and generates inside the GPT, and each property check_mixer tests is shown failing on a mixer built to break
exactly that property (real torch, no mocks). The built-in mixers pass the same check."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.model import (
    GPT,
    GPTConfig,
    MixerContractError,
    check_mixer,
    count_params,
    flops_per_token,
    register_mixer,
    registered_mixers,
    solve_architecture,
)
from trainables.model.attention import norm
from trainables.model.gpt import softcap
from trainables.model.mixers import declares_flops, unregister_mixer
from trainables.probes import run_probes

K = 4  # the convolution's kernel: each output sees its own position and the K-1 before it


class CausalConv(nn.Module):
    """y_t = c_proj(sum_{k<K} w_h[k] x_{t-K+1+k}): one K-tap filter per head, shared by the head's channels
    (depthwise), applied over the input left-padded with K-1 zeros (or, when generating, with the last K-1 inputs
    the cache holds)."""

    has_cache = True

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.filters = nn.Parameter(torch.randn(cfg.n_head, K) / K)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    @staticmethod
    def count_params(cfg: GPTConfig) -> int:
        return cfg.n_head * K + cfg.n_embd * cfg.n_embd

    @staticmethod
    def flops_per_token(cfg: GPTConfig) -> float:
        # K multiply-adds per channel (2 C K forward, x3 for training), less the 6 H K its filters count as parameters
        return 6 * K * (cfg.n_embd - cfg.n_head)

    def past(self, x: torch.Tensor, cache: dict | None) -> torch.Tensor:
        """The K-1 positions before x: zeros at the start, else the cache's."""
        if cache is None or "x" not in cache:
            return x.new_zeros(x.size(0), K - 1, x.size(2))
        return cache["x"]

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        C = x.size(2)
        xp = torch.cat([self.past(x, cache), x], dim=1)
        if cache is not None:
            cache["x"] = xp[:, -(K - 1) :]
        return self.c_proj(self.conv(xp, C))

    def conv(self, xp: torch.Tensor, C: int) -> torch.Tensor:
        w = self.filters.repeat_interleave(C // self.n_head, dim=0).unsqueeze(1)  # [C, 1, K]
        return F.conv1d(xp.transpose(1, 2), w, groups=C).transpose(1, 2)


class NoHasCache(nn.Module):
    """The convolution behind a class that forgot has_cache, and has no count_params or flops_per_token."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.inner = CausalConv(cfg)

    def forward(self, x, cache=None):
        return self.inner(x)


class PlainConv(NoHasCache):
    """The convolution declaring no cache, nor a count (it is counted on the meta device) or FLOPs of its own."""

    has_cache = False


class LookAhead(CausalConv):
    """Padded on the right: position t sees t..t+K-1."""

    has_cache = False

    def forward(self, x, cache=None):
        xp = torch.cat([x, x.new_zeros(x.size(0), K - 1, x.size(2))], dim=1)
        return self.c_proj(self.conv(xp, x.size(2)))


class DetachedGain(CausalConv):
    """A gain applied through .detach(): the loss depends on it, its gradient never arrives."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.gain = nn.Parameter(torch.ones(cfg.n_embd))

    @staticmethod
    def count_params(cfg):
        return CausalConv.count_params(cfg) + cfg.n_embd

    def forward(self, x, cache=None):
        return super().forward(x, cache) * self.gain.detach()


class MiscountedConv(CausalConv):
    @staticmethod
    def count_params(cfg):
        return cfg.n_embd * cfg.n_embd  # forgot the filters


class ForgetfulConv(CausalConv):
    """Stores the cache but pads every call with zeros: new positions lose the K-1 inputs before them."""

    def past(self, x, cache):
        return x.new_zeros(x.size(0), K - 1, x.size(2))


class DoubleWidth(CausalConv):
    def forward(self, x, cache=None):
        y = super().forward(x, cache)
        return torch.cat([y, y], dim=-1)


class Crashes(PlainConv):
    def forward(self, x, cache=None):
        raise RuntimeError("kernel failed\nwith a second line")


@pytest.fixture
def registry():
    """register_mixer for one test: registrations it adds are removed after it."""
    before = set(registered_mixers())
    yield register_mixer
    for name in set(registered_mixers()) - before:
        unregister_mixer(name)


def _cfg(mixer: str, **ov) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=64, n_layer=2, n_embd=32, n_head=2, seq_len=16, mixer=mixer), **ov})


# ---------------------------------------------------------------------------------------------- passing mixers


@pytest.mark.parametrize("name", ["attention", "toeplitz"])
def test_the_built_in_mixers_pass_the_check(name):
    check_mixer(name)


def test_causal_conv_passes_and_its_counts_are_the_hand_formulas(registry):
    registry("conv", CausalConv)
    check_mixer("conv")
    cfg = _cfg("conv", n_layer=3, n_embd=48, n_head=4, vocab_size=80)
    C, L, H, V, M = 48, 3, 4, 80, cfg.mlp_hidden
    model = GPT(cfg)
    assert all(isinstance(b.mixer, CausalConv) for b in model.transformer.h)
    p = count_params(cfg)
    assert p["total"] == sum(t.numel() for t in model.parameters())
    assert p["mixer"] == L * (H * K + C * C) and p["mlp"] == L * 2 * C * M
    # 6 x (every matrix and filter: blocks + lm_head) + per layer the taps' multiply-adds beyond the filters' 6 H K
    assert flops_per_token(cfg) == 6 * (L * (H * K + C * C + 2 * C * M) + V * C) + L * 6 * K * (C - H)
    assert declares_flops(cfg) and declares_flops("conv") and declares_flops("attention")


def test_gpt_with_a_registered_mixer_matches_a_written_out_forward(registry):
    """Pre-norm blocks with the mixer called on norm(x): x += mixer(norm(x)); x += mlp(norm(x))."""
    registry("conv", CausalConv)
    cfg = _cfg("conv")
    torch.manual_seed(0)
    model = GPT(cfg).double().eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    with torch.no_grad():
        x = norm(model.transformer.wte(idx))
        for b in model.transformer.h:
            h = norm(x)
            xp = F.pad(h, (0, 0, K - 1, 0))  # left padding
            w = b.mixer.filters.repeat_interleave(cfg.n_embd // cfg.n_head, dim=0)  # [C, K]
            conv = sum(w[:, k] * xp[:, k : k + 16] for k in range(K))
            x = x + b.mixer.c_proj(conv)
            x = x + b.mlp(norm(x))
        ref = softcap(model.lm_head(norm(x)), cfg.logit_softcap)
        got = model(idx)
    assert (got - ref).abs().max().item() < 1e-12


def test_uncached_mixer_passes_and_generate_reruns_the_full_context(registry):
    registry("plain_conv", PlainConv)
    check_mixer("plain_conv")
    cfg = _cfg("plain_conv")
    torch.manual_seed(1)
    model = GPT(cfg).double().eval()
    calls = []
    model.transformer.h[0].mixer.register_forward_hook(lambda m, args, out: calls.append(args[0].size(1)))
    prompt = torch.randint(0, cfg.vocab_size, (2, 4))
    with torch.no_grad():
        out = model.generate(prompt, 6, temperature=0)
        assert calls == [4, 5, 6, 7, 8, 9, 10]  # no cache: every step sees the whole context
        ref = prompt
        for _ in range(6):
            ref = torch.cat([ref, model(ref)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)
    # no count_params: counted on the meta device; no flops_per_token: 6 x the parameters only
    p = count_params(cfg)
    assert p["total"] == model.num_params()
    assert not declares_flops(cfg)
    assert flops_per_token(cfg) == 6 * (p["total"] - p["embedding"])


def test_cached_mixer_generates_one_position_at_a_time(registry):
    registry("conv", CausalConv)
    cfg = _cfg("conv")
    torch.manual_seed(2)
    model = GPT(cfg).double().eval()
    calls = []
    model.transformer.h[0].mixer.register_forward_hook(lambda m, args, out: calls.append(args[0].size(1)))
    with torch.no_grad():
        model.generate(torch.randint(0, cfg.vocab_size, (1, 4)), 5, temperature=0)
    assert calls == [4, 1, 1, 1, 1, 1]


# ---------------------------------------------------------------------------------------------- failing mixers


@pytest.mark.parametrize(
    "cls, words",
    [
        (LookAhead, ["not causal", "position", ">= 1"]),
        (DetachedGain, ["gradients", "mixer.gain"]),
        (MiscountedConv, ["count_params", "counted 1024, built 1032"]),
        (ForgetfulConv, ["cached generation"]),
        (DoubleWidth, ["shape", "[2, 16, 64]", "[2, 16, 32]"]),
        (NoHasCache, ["has_cache"]),
        (Crashes, ["shape", "RuntimeError", "kernel failed"]),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_a_broken_mixer_fails_naming_the_property(registry, cls, words):
    name = cls.__name__.lower()
    registry(name, cls)
    with pytest.raises(MixerContractError) as info:
        check_mixer(name)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"mixer {name!r}: "), msg
    for w in words:
        assert w in msg, msg
    assert isinstance(info.value, ValueError)


def test_check_mixer_leaves_the_rng_and_threads_alone(registry):
    registry("conv", CausalConv)
    threads = torch.get_num_threads()
    torch.manual_seed(3)
    want = torch.rand(3)
    torch.manual_seed(3)
    check_mixer("conv")
    assert torch.equal(torch.rand(3), want) and torch.get_num_threads() == threads


def test_check_mixer_of_an_unknown_name_is_a_plain_value_error():
    with pytest.raises(ValueError, match="nope") as info:
        check_mixer("nope")
    assert not isinstance(info.value, MixerContractError)


# ---------------------------------------------------------------------------------------------- registry and config


@pytest.mark.parametrize("name", ["Conv", "1conv", "conv-1", "", "con v", 3])
def test_register_refuses_a_bad_name(registry, name):
    with pytest.raises(ValueError, match=r"\[a-z\]\[a-z0-9_\]\*"):
        registry(name, CausalConv)


@pytest.mark.parametrize("name", ["attention", "toeplitz"])
def test_register_refuses_a_built_in_name(registry, name):
    with pytest.raises(ValueError, match="built-in"):
        registry(name, CausalConv)


@pytest.mark.parametrize("cls", [CausalConv.forward, object, int, "CausalConv"], ids=str)
def test_register_refuses_what_is_not_a_module_class(registry, cls):
    with pytest.raises(ValueError, match="torch.nn.Module subclass"):
        registry("conv", cls)


def test_register_refuses_a_second_class_under_a_name_and_accepts_the_same_one(registry):
    registry("conv", CausalConv)
    registry("conv", CausalConv)  # a study file imported twice
    with pytest.raises(ValueError, match="already registered") as info:
        registry("conv", LookAhead)
    assert "\n" not in str(info.value) and "CausalConv" in str(info.value)
    assert registered_mixers()["conv"] is CausalConv


def test_registered_mixers_is_a_copy_of_the_user_registrations(registry):
    registry("conv", CausalConv)
    got = registered_mixers()
    assert got["conv"] is CausalConv and "attention" not in got and "toeplitz" not in got
    got.clear()
    assert "conv" in registered_mixers()


def test_config_lists_the_allowed_mixers(registry):
    registry("conv", CausalConv)
    with pytest.raises(ValueError) as info:
        GPTConfig(mixer="nope")
    msg = str(info.value)
    assert msg.startswith("GPTConfig.mixer='nope'") and all(n in msg for n in ("attention", "toeplitz", "conv"))


@pytest.mark.parametrize("key, value", [("nanohead_proportion", 0.25), ("softmax1", True)])
def test_config_refuses_attention_keys_for_a_registered_mixer(registry, key, value):
    registry("conv", CausalConv)
    with pytest.raises(ValueError, match=f"GPTConfig.{key}=.*mixer='conv'"):
        _cfg("conv", **{key: value})


def test_nanogpt_arch_refuses_a_registered_mixer(registry):
    registry("conv", CausalConv)
    with pytest.raises(ValueError, match="GPTConfig.mixer='conv'"):
        GPTConfig(arch="nanogpt", mixer="conv", qk_norm=False, logit_softcap=None)


# ---------------------------------------------------------------------------------------------- planning and probes


@pytest.mark.parametrize("cls", [CausalConv, PlainConv], ids=["own_count", "meta_count"])
def test_solver_param_matches_a_registered_mixer(registry, cls):
    registry("conv", cls)
    target = 3e6
    cands = solve_architecture(target, 4096, head_dim=32, mixer="conv", max_layers=12)
    assert cands
    for c in cands:
        assert abs(c.params["total"] - target) <= 0.05 * target
        assert c.params == count_params(c.config(mixer="conv"))
    pick = cands[len(cands) // 2]
    with torch.device("meta"):
        built = GPT(pick.config(mixer="conv"))
    assert sum(p.numel() for p in built.parameters()) == pick.params["total"]
    # the conv's layer (H K + C^2) is lighter than attention's (4 C^2): the same depth gets a wider model
    attn = {c.n_layer: c.n_embd for c in solve_architecture(target, 4096, head_dim=32, max_layers=12)}
    assert any(c.n_embd > attn[c.n_layer] for c in cands if c.n_layer in attn)


def test_run_probes_on_a_registered_mixer_gives_the_common_probes(registry):
    registry("conv", CausalConv)
    cfg = _cfg("conv")
    model = GPT(cfg)
    x = torch.randint(0, cfg.vocab_size, (4, 16))
    scalars, details = run_probes(model, [(x, x.roll(-1, 1))], cfg.seq_len, batch_size=4, batches=1)
    assert {"probe_max_inf_norm", "probe_attn_max_inf_norm", "probe_w8a8_delta"} <= set(scalars)
    assert not any("receptive_field" in k or "sink" in k for k in scalars) and "filters" not in details
