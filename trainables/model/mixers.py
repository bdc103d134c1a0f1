"""Token mixers a user brings: the registry, its contract (register_mixer's docstring), and check_mixer.

The built-in mixers, attention and toeplitz, have their own code paths in GPT; any other GPTConfig.mixer
value names a class registered here. check_mixer runs the contract on a tiny float64 model in well under a
second, so a study can call it before spending hours training a mixer that looks ahead.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from .config import GPTConfig

BUILTIN_MIXERS = ("attention", "toeplitz")
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_REGISTRY: dict[str, type[nn.Module]] = {}


class MixerContractError(ValueError):
    """A mixer broke its contract: one line naming the mixer and the property that failed."""


def register_mixer(name: str, cls: type[nn.Module]) -> None:
    """Makes `cls` the token mixer that GPTConfig(mixer=name) builds in every block of the nanochat-style GPT.

    The contract (check_mixer(name) tests it):
      - built as cls(cfg) with cfg a GPTConfig; cfg.n_embd is the width C, cfg.seq_len the longest context.
        GPT's init then draws every nn.Linear and nn.Embedding weight from N(0, 0.02), and scales the weight of a
        submodule named c_proj by 1/sqrt(2 n_layer) (the residual projection); other parameters keep cls's init.
      - forward(x, cache=None): x [B, T, C], the block's normed input -> [B, T, C], added to the residual stream.
        Causal: the output at position t depends on x at positions <= t only.
      - class attribute has_cache: bool. True: the mixer caches for generation. GPT.generate then passes each
        layer its own dict (empty at first, kept across the steps of one generate call), first with the prompt,
        then with x holding only the new positions; the output for those must equal that of a full forward over
        everything seen so far. False: the mixer ignores cache, and generate reruns the full context each step.
      - optional count_params(cfg) -> int (staticmethod or classmethod): the parameters of ONE mixer layer.
        Without it the count comes from building cls(cfg) on the meta device. Either way it must equal the
        built layer's numel, since studies param-match by count_params(cfg) without building models.
      - optional flops_per_token(cfg) -> float: training FLOPs per token of one layer's mixing beyond 6 x its
        parameters (attention's is 12 C T: QK^T and AV, forward and backward). Without it flops_per_token
        counts only 6 x the mixer's parameters (declares_flops says which).
    The name must match [a-z][a-z0-9_]* and not be a built-in (attention, toeplitz). Registering the same class
    under the same name again does nothing (a study file may be imported twice); another class under a taken
    name is a ValueError. A registration lives in this process: Ray workers need it shipped (registered_mixers).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"register_mixer name={name!r}: must match [a-z][a-z0-9_]* (it is a GPTConfig.mixer value)")
    if name in BUILTIN_MIXERS:
        raise ValueError(f"register_mixer name={name!r}: a built-in mixer; choose a name other than {BUILTIN_MIXERS}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"register_mixer cls={cls!r} for {name!r}: must be a torch.nn.Module subclass")
    taken = _REGISTRY.get(name)
    if taken is not None and taken is not cls:
        raise ValueError(
            f"register_mixer name={name!r}: already registered to {_qualname(taken)}; "
            f"{_qualname(cls)} needs another name (or unregister_mixer first)"
        )
    _REGISTRY[name] = cls


def unregister_mixer(name: str) -> None:
    """Removes a registration (tests; a notebook redefining its mixer). An unknown name is ignored."""
    _REGISTRY.pop(name, None)


def registered_mixers() -> dict[str, type[nn.Module]]:
    """The user-registered mixers, name -> class (a copy): what a driver ships to Ray workers to register there."""
    return dict(_REGISTRY)


def mixer_class(name: str) -> type[nn.Module]:
    """The class registered under `name`; a ValueError listing the known mixers if there is none."""
    if name not in _REGISTRY:
        raise ValueError(f"mixer={name!r}: must be {known_mixers()}")
    return _REGISTRY[name]


def known_mixers() -> str:
    """The mixers GPTConfig accepts, for error messages: the built-ins, then the registered ones."""
    registered = ", ".join(_REGISTRY) if _REGISTRY else "none yet (trainables.model.register_mixer adds one)"
    return f"one of the built-in mixers {', '.join(BUILTIN_MIXERS)} or a registered one: {registered}"


def mixer_has_cache(cfg: GPTConfig) -> bool:
    """Whether generation can cache for this config's mixer (the built-ins can; a registered one if it says so)."""
    return cfg.mixer in BUILTIN_MIXERS or getattr(mixer_class(cfg.mixer), "has_cache", False) is True


def mixer_params(cfg: GPTConfig) -> int:
    """Parameters of one layer of a registered mixer: its count_params(cfg), else a count of one built on meta."""
    cls = mixer_class(cfg.mixer)
    if hasattr(cls, "count_params"):
        return cls.count_params(cfg)
    with torch.device("meta"):  # shapes without memory or init: as cheap for a 1B model as for a tiny one
        return sum(p.numel() for p in cls(cfg).parameters())


def mixer_flops(cfg: GPTConfig) -> float:
    """One layer's mixing FLOPs per token beyond 6 x its parameters, as the registered mixer declares (else 0)."""
    cls = mixer_class(cfg.mixer)
    return cls.flops_per_token(cfg) if hasattr(cls, "flops_per_token") else 0.0


def declares_flops(cfg_or_name: GPTConfig | str) -> bool:
    """False when a registered mixer has no flops_per_token, so FLOPs (and MFU) count only its 6 x parameters."""
    name = cfg_or_name if isinstance(cfg_or_name, str) else cfg_or_name.mixer
    return name in BUILTIN_MIXERS or hasattr(mixer_class(name), "flops_per_token")


def _qualname(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# ----------------------------------------------------------------------------- the contract, checked

CHECK_CONFIG = dict(vocab_size=64, n_layer=2, n_embd=32, n_head=2, seq_len=16)  # tiny: the whole check < 1 s
CHECK_TOL = 1e-9  # float64: a causal, cache-exact mixer differs by rounding alone (~1e-15), far below this


def check_mixer(name: str) -> None:
    """Checks the mixer registered as `name` (or a built-in) against the contract in register_mixer's docstring,
    on a seeded float64 GPT(mixer=name) with CHECK_CONFIG's shape:
      has_cache        a class attribute, True or False;
      shape            the module maps x [B, T, C] to [B, T, C] (T = seq_len and a shorter T);
      causal           changing x (random, straight into the module) or the tokens (through the whole GPT) from
                       position t on leaves every output before t unchanged within CHECK_TOL, for every t;
      count_params     count_params(cfg)["total"] equals the built model's numel;
      flops_per_token  where declared, a finite number >= 0;
      cached generation  (has_cache) prompt then one token at a time through the cache gives the logits of full
                       forwards within CHECK_TOL, and generate() picks the tokens that repeated forwards pick;
      gradients        every mixer parameter gets a finite gradient that is not all zero.
    The mixer's parameters are nudged off their init first (+ N(0, 0.02^2)): a zero-initialised gate would
    otherwise hide a look-ahead, or zero every other mixer gradient at step 0.
    Raises MixerContractError naming the mixer and the first property that failed (an exception raised by the
    mixer's own code counts as that property failing), a ValueError for a name that is not a mixer at all.
    The global RNG and the thread count are left as they were.
    """
    # Imported here, not at the top: config, gpt and params all look mixers up in this module.
    from .config import GPTConfig
    from .gpt import GPT

    if name not in BUILTIN_MIXERS:
        cls = mixer_class(name)
        if not isinstance(getattr(cls, "has_cache", None), bool):
            _fail(name, "has_cache: the class must set has_cache = True or False (whether it caches for generate)")
    cfg = GPTConfig(**CHECK_CONFIG, mixer=name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors gain nothing from threads, and on a busy CPU the pool costs seconds
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = _step(name, "building GPT(cfg)", lambda: GPT(cfg).to(torch.float64).eval())
            with torch.no_grad():
                for p in _mixer_params(model).values():
                    p.add_(torch.randn_like(p), alpha=0.02)
            for what, check in (
                ("shape", _check_shape),
                ("causal", _check_causal),
                ("count_params", _check_count),
                ("flops_per_token", _check_flops),
                ("cached generation", _check_cache),
                ("gradients", _check_gradients),
            ):
                problem = _step(name, what, lambda check=check: check(model, cfg))
                if problem:
                    _fail(name, problem)
    finally:
        torch.set_num_threads(threads)


def _fail(name: str, problem: str):
    raise MixerContractError(f"mixer {name!r}: {problem}")


def _step(name: str, what: str, fn):
    """fn(), with an exception from the mixer's code reported as `what` failing, in one line."""
    try:
        return fn()
    except MixerContractError:
        raise
    except Exception as e:
        first_line = (str(e).strip().splitlines() or [""])[0]
        raise MixerContractError(f"mixer {name!r}: {what}: raised {type(e).__name__}: {first_line}") from e


def _mixer_params(model) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if ".mixer." in n}


def _mix(model, x: torch.Tensor) -> torch.Tensor:
    """The first block's mixer on x alone, called as the block calls it (rotary tables for attention)."""
    T = x.size(1)
    return model.transformer.h[0].mix(x, model.cos[:T], model.sin[:T], "parallel", None)


def _check_shape(model, cfg) -> str | None:
    for T in (cfg.seq_len, 5):
        x = torch.randn(2, T, cfg.n_embd, dtype=torch.float64)
        with torch.no_grad():
            y = _mix(model, x)
        got = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        if got != list(x.shape):
            return f"shape: returned {got} for x of {list(x.shape)}; must return [B, T, C] (C = n_embd)"
    return None


def _check_causal(model, cfg) -> str | None:
    T, V = cfg.seq_len, cfg.vocab_size
    x = torch.randn(2, T, cfg.n_embd, dtype=torch.float64)
    idx = torch.randint(0, V, (2, T))
    with torch.no_grad():
        y, logits = _mix(model, x), model(idx)
        for t in range(1, T):
            x2 = x.clone()
            x2[:, t:] = torch.randn(2, T - t, cfg.n_embd, dtype=torch.float64)
            idx2 = idx.clone()
            idx2[:, t:] = (idx[:, t:] + 1 + torch.arange(T - t)) % V  # every token from t on changes
            for where, a, b in (
                ("the mixer on random x", y, _mix(model, x2)),
                ("the GPT's logits", logits, model(idx2)),
            ):
                moved = (a[:, :t] - b[:, :t]).abs().amax(dim=(0, 2))  # per position before t
                if (moved > CHECK_TOL).any():
                    pos = int(torch.nonzero(moved > CHECK_TOL)[0])
                    return (
                        f"not causal: output at position {pos} changed when only positions >= {t} changed "
                        f"(by {moved[pos].item():.1e}, {where})"
                    )
    return None


def _check_count(model, cfg) -> str | None:
    from .params import count_params  # params imports this module

    counted, built = count_params(cfg), model.num_params()
    if counted["total"] != built:
        layer = sum(p.numel() for p in model.transformer.h[0].mixer.parameters())
        return (
            f"count_params: count_params(cfg)['total'] = {counted['total']} but the built GPT holds {built} "
            f"(one mixer layer: counted {counted['mixer'] // cfg.n_layer}, built {layer})"
        )
    return None


def _check_flops(model, cfg) -> str | None:
    if cfg.mixer in BUILTIN_MIXERS or not declares_flops(cfg):
        return None
    f = mixer_flops(cfg)
    if not (isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f >= 0):
        return f"flops_per_token: returned {f!r}; must be a finite number >= 0 (FLOPs per token of one layer)"
    return None


def _check_cache(model, cfg) -> str | None:
    if not mixer_has_cache(cfg):
        return None  # generate reruns the full context: nothing of the mixer's to compare
    from .gpt import Cache  # gpt imports this module

    prompt_len, new = 5, cfg.seq_len - 5
    seq = torch.randint(0, cfg.vocab_size, (2, prompt_len))
    cache = Cache(cfg.n_layer)
    with torch.no_grad():
        cached = model(seq, cache=cache)
        for step in range(new + 1):
            full = model(seq)[:, -cached.size(1) :]
            err = (cached - full).abs().amax(dim=(0, 2))
            if (err > CHECK_TOL).any():
                pos = seq.size(1) - cached.size(1) + int(torch.nonzero(err > CHECK_TOL)[0])
                return (
                    f"cached generation: logits at position {pos} differ from a full forward's by "
                    f"{err.max().item():.1e} (has_cache=True: x then holds only the new positions)"
                )
            if step == new:
                break
            seq = torch.cat([seq, full[:, -1].argmax(-1, keepdim=True)], dim=1)
            cached = model(seq[:, -1:], cache=cache)
        out = model.generate(seq[:, :prompt_len], new, temperature=0)
    if not torch.equal(out, seq):
        return "cached generation: generate() picked other tokens than repeated full forwards"
    return None


def _check_gradients(model, cfg) -> str | None:
    model.train()
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    model(idx, torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))).backward()
    model.eval()
    for n, p in _mixer_params(model).items():
        if p.grad is None:
            return f"gradients: none reach {n} (no path from the loss to it: unused, or detached)"
        if not torch.isfinite(p.grad).all():
            return f"gradients: non-finite in {n}"
        if not p.grad.any():
            return f"gradients: all zero for {n}"
    return None
