"""Token mixers a user brings: the registry and its contract (register_mixer's docstring).

The built-in mixers, attention and toeplitz, have their own code paths in GPT; any other GPTConfig.mixer
value names a class registered here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from .config import GPTConfig

BUILTIN_MIXERS = ("attention", "toeplitz")
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_REGISTRY: dict[str, type[nn.Module]] = {}


def register_mixer(name: str, cls: type[nn.Module]) -> None:
    """Makes `cls` the token mixer that GPTConfig(mixer=name) builds in every block of the nanochat-style GPT.

    The contract:
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
