"""Variant catalogue and builders for the model tests (optuna style: one contract, many implementations).

Every variant is a tiny GPTConfig plus the forward kwargs it needs. The contract tests in
test_model_contract.py run over all of them through the `variant` fixture in conftest.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from trainables.model import GPT, GPTConfig, build_model

BASE = dict(vocab_size=96, n_layer=2, n_embd=64, n_head=4, seq_len=32)

# name -> GPTConfig overrides. n_embd=64, n_head=4: head dim 16.
ATTENTION = {
    "attn": {},
    "gqa": dict(n_kv_head=2),
    "mqa": dict(n_kv_head=1),
    # p=0.25, nd=3: target 5.33 -> k=8 nano heads (24 wide), normal_dim 10
    "nano": dict(nanohead_proportion=0.25),
    # nd=2, p=0.5: target 16 -> k=16 (32 wide), normal_dim 8
    "nano_d2": dict(nanohead_proportion=0.5, nanohead_dim=2),
    # g=2: k must be even as well -> k=8, 4 kv nano heads, 2 kv normal heads
    "nano_gqa": dict(nanohead_proportion=0.25, n_kv_head=2),
    "softmax1": dict(softmax1=True),
    "softmax1_nano_gqa": dict(softmax1=True, nanohead_proportion=0.25, n_kv_head=2),
    "no_qknorm": dict(qk_norm=False),
    "tied_nocap": dict(tie_embeddings=True, logit_softcap=None),
    "mlp_ratio": dict(mlp_ratio=2.5, rope_base=100.0),
}

# nanoGPT's own architecture (arch="nanogpt"): with biases and tied, or without and untied, softmax1.
NANOGPT = dict(arch="nanogpt", qk_norm=False, logit_softcap=None)
NANOGPT_VARIANTS = {
    "nanogpt": dict(NANOGPT, bias=True, tie_embeddings=True),
    "nanogpt_softmax1_untied": dict(NANOGPT, softmax1=True),
}

TOEPLITZ = {
    f"toep_{'mean' if m else 'nomean'}_{'proj' if p else 'noproj'}": dict(mixer="toeplitz", toep_mean=m, toep_proj=p)
    for m in (False, True)
    for p in (False, True)
}


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict
    fwd: dict = field(default_factory=dict)  # extra forward kwargs (mixer_path)

    def config(self, **more) -> GPTConfig:
        return GPTConfig(**{**BASE, **self.overrides, **more})

    @property
    def is_toeplitz(self) -> bool:
        return self.overrides.get("mixer") == "toeplitz"


def _variants() -> list[Variant]:
    out = []
    for name, ov in {**ATTENTION, **NANOGPT_VARIANTS}.items():
        for backend in ("sdpa", "manual"):
            out.append(Variant(f"{name}-{backend}", {**ov, "attn_backend": backend}))
    for name, ov in TOEPLITZ.items():
        for path in ("parallel", "sequential"):
            out.append(Variant(f"{name}-{path}", ov, {"mixer_path": path}))
    return out


VARIANTS = _variants()


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere. nanochat-style init zeroes c_proj and lm_head, which would make the
    attention invisible in the logits (and every upstream gradient zero), so reference and gradient
    tests draw fresh weights: N(0, 1/fan_in) for matrices, N(0, 1) for the embedding."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "wte" not in name:
                std = 1.0 / math.sqrt(p.shape[1])
            else:
                std = 1.0
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * std)
    return model


def build(cfg: GPTConfig, *, seed: int = 0, dtype=torch.float64, random_weights: bool = True) -> GPT:
    torch.manual_seed(seed)
    model = build_model(cfg)
    model = model.to(dtype)
    if random_weights:
        randomize_(model, seed)
    model.eval()
    return model


def tokens(cfg: GPTConfig, B: int, T: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 + seed)
    return torch.randint(0, cfg.vocab_size, (B, T), generator=gen)
