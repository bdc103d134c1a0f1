"""GPTConfig and the nano-head split rule.

Every architecture the studies compare is one GPTConfig: the nanochat-style baseline, nano heads
(`nanohead_proportion`), softmax1 (`softmax1`), the Toeplitz mixer (`mixer="toeplitz"`), a mixer a user
registered (mixers.register_mixer), and nanoGPT's own architecture (`arch="nanogpt"`, with or without `bias`;
softmax1 too). A config
is checked when it is built, so a bad value fails with a message naming the field, never with a
shape error deep inside forward.
"""

import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

from .mixers import BUILTIN_MIXERS, known_mixers, registered_mixers

MIXERS = BUILTIN_MIXERS
TOEP_FILTERS = ("linear", "exp")
TOEP_INITS = ("normal", "ema")
ATTN_BACKENDS = ("sdpa", "flash", "manual")
INITS = ("gpt2", "nanochat")
ARCHS = ("nanochat", "nanogpt")


@dataclass(kw_only=True)
class GPTConfig:
    arch: str = "nanochat"  # "nanochat" (gpt.py) | "nanogpt": karpathy/nanoGPT's model.py (nanogpt.py)
    vocab_size: int = 4096
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4  # query heads (normal heads when nano heads are on); Toeplitz heads for the mixer
    n_kv_head: int | None = None  # GQA; None -> n_head (plain multi-head attention)
    seq_len: int = 256  # context length; also the Toeplitz filter length
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * n_embd
    nanohead_proportion: float = 0.0  # share of the query width given to tiny heads without RoPE
    nanohead_dim: int = 3
    softmax1: bool = False  # exp(s_i) / (1 + sum_j exp(s_j)): heads may attend to nothing
    mixer: str = "attention"  # "attention" | "toeplitz" | a name given to register_mixer
    toep_mean: bool = False  # Toeplitz: divide by the cumulative filter sum (weighted mean)
    toep_proj: bool = False  # Toeplitz: input and output projections around the mixing
    toep_proj_bias: bool = True  # Toeplitz: the projections carry biases (the note's nn.Linear default)
    toep_filter: str = (
        "linear"  # Toeplitz filter w from its parameter: "linear" w = raw (the note) | "exp" w = exp(raw) > 0
    )
    toep_init: str = "normal"  # Toeplitz raw at init: "normal" N(0, 0.2^2) (the note) | "ema" decaying averages, sum 1
    tie_embeddings: bool = False
    dropout: float = 0.0
    attn_backend: str = "sdpa"  # "sdpa" | "flash" (flash-attn, CUDA only) | "manual"
    qk_norm: bool = True
    init: str = "gpt2"  # "gpt2": N(0, 0.02) | "nanochat": its init_weights, which its learning rates were tuned with
    rope_base: float = 10000.0
    logit_softcap: float | None = 15.0
    bias: bool = False  # nanogpt: biases in the Linears and LayerNorms (nanoGPT's `bias`); nanochat has none

    def __post_init__(self):
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        for name in ("vocab_size", "n_layer", "n_embd", "n_head", "n_kv_head", "seq_len", "nanohead_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name}={value!r}: must be an integer >= 1")
        _check(self.mixer in MIXERS or self.mixer in registered_mixers(), "mixer", self.mixer, known_mixers())
        _check(self.toep_filter in TOEP_FILTERS, "toep_filter", self.toep_filter, f"one of {', '.join(TOEP_FILTERS)}")
        _check(self.toep_init in TOEP_INITS, "toep_init", self.toep_init, f"one of {', '.join(TOEP_INITS)}")
        _check(
            self.attn_backend in ATTN_BACKENDS, "attn_backend", self.attn_backend, f"one of {', '.join(ATTN_BACKENDS)}"
        )
        _check(self.init in INITS, "init", self.init, f"one of {', '.join(INITS)}")
        _check(
            self.init == "gpt2" or (self.arch == "nanochat" and self.mixer == "attention" and not self.tie_embeddings),
            "init",
            self.init,
            "'gpt2' unless arch='nanochat', mixer='attention' and untied embeddings (nanochat's init is for its own model)",
        )
        _check(
            is_number(self.nanohead_proportion) and 0.0 <= self.nanohead_proportion < 1.0,
            "nanohead_proportion",
            self.nanohead_proportion,
            "a number in [0, 1)",
        )
        _check(is_number(self.dropout) and 0.0 <= self.dropout < 1.0, "dropout", self.dropout, "a number in [0, 1)")
        _check(
            is_number(self.mlp_ratio) and self.mlp_ratio > 0 and int(self.mlp_ratio * self.n_embd) >= 1,
            "mlp_ratio",
            self.mlp_ratio,
            f"a finite number > 0 with mlp_ratio x n_embd >= 1 (n_embd={self.n_embd})",
        )
        _check(
            is_number(self.rope_base) and self.rope_base > 1,
            "rope_base",
            self.rope_base,
            "a finite number > 1 (RoPE's wavelengths grow as its powers)",
        )
        _check(
            self.logit_softcap is None or (is_number(self.logit_softcap) and self.logit_softcap >= 0),
            "logit_softcap",
            self.logit_softcap,
            "None, 0 (off) or a finite positive number",
        )
        _check(self.n_embd % self.n_head == 0, "n_head", self.n_head, f"a divisor of n_embd={self.n_embd}")
        _check(self.n_head % self.n_kv_head == 0, "n_kv_head", self.n_kv_head, f"a divisor of n_head={self.n_head}")
        _check(self.arch in ARCHS, "arch", self.arch, f"one of {', '.join(ARCHS)}")
        _check(
            isinstance(self.bias, bool) and (not self.bias or self.arch == "nanogpt"),
            "bias",
            self.bias,
            "True or False with arch='nanogpt'; False with arch='nanochat' (it has no biases)",
        )
        if self.arch == "nanogpt":  # nanoGPT's model.py has none of these: refused rather than silently ignored
            why = "with arch='nanogpt' (nanoGPT's model.py has"
            _check(self.mixer == "attention", "mixer", self.mixer, f"'attention' {why} attention only)")
            _check(
                self.nanohead_proportion == 0,
                "nanohead_proportion",
                self.nanohead_proportion,
                f"0 {why} no nano heads)",
            )
            _check(self.n_kv_head == self.n_head, "n_kv_head", self.n_kv_head, f"n_head={self.n_head} {why} no GQA)")
            _check(not self.qk_norm, "qk_norm", self.qk_norm, f"False {why} no QK norm)")
            _check(not self.logit_softcap, "logit_softcap", self.logit_softcap, f"None or 0 {why} no logit softcap)")
        if self.mixer == "attention":
            nanohead_split(self)  # raises a ValueError naming the field when no valid split exists
        else:  # Toeplitz or a registered mixer: the attention-only keys would be silently ignored
            _check(
                self.nanohead_proportion == 0,
                "nanohead_proportion",
                self.nanohead_proportion,
                f"0 with mixer={self.mixer!r} (nano heads are attention heads)",
            )
            _check(
                not self.softmax1,
                "softmax1",
                self.softmax1,
                f"False with mixer={self.mixer!r} (softmax1 replaces attention's softmax)",
            )

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_ratio * self.n_embd)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        """Builds a config from a flat dict, ignoring keys that are not GPTConfig fields (trial configs hold more)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _check(ok: bool, name: str, value, allowed: str):
    if not ok:
        raise ValueError(f"GPTConfig.{name}={value!r}: must be {allowed}")


def is_number(value) -> bool:
    """A finite int or float, not a bool: `--set lr=1e999` parses as inf, and nan passes every comparison test unnoticed."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class HeadSplit(NamedTuple):
    n_normal: int  # query heads with RoPE, each normal_dim wide
    normal_dim: int
    n_nano: int  # query heads without RoPE, each nano_dim wide
    nano_dim: int
    n_kv_normal: int
    n_kv_nano: int

    @property
    def nano_fraction(self) -> float:
        """The share of the query width actually given to nano heads (the requested one, rounded)."""
        return self.n_nano * self.nano_dim / (self.n_nano * self.nano_dim + self.n_normal * self.normal_dim)


def nanohead_split(cfg: GPTConfig) -> HeadSplit:
    """How the query width n_embd is shared between normal heads and nano heads.

    Rule: the n_head normal heads stay (so their count, and GQA group size g = n_head/n_kv_head, are
    those of the baseline) and shrink to an even width (RoPE rotates pairs); k nano heads of
    nanohead_dim take the rest, so that n_head*normal_dim + k*nanohead_dim == n_embd exactly. k is the
    valid value nearest to p*n_embd/nanohead_dim (ties go to the smaller k), where valid means:
      k >= 1, k divisible by g (each kv head serves g query heads of its own kind),
      n_embd - k*nanohead_dim divisible by 2*n_head, and normal_dim >= 2.
    Edges: a tiny p still gives the smallest valid k (never zero nano heads when p > 0); a p near 1
    gives the largest valid k (normal heads of width 2). When no k is valid (e.g. odd n_embd with
    even nanohead_dim) it is a ValueError. The achieved share is `nano_fraction`.
    With this rule the parameter count does not depend on p at all: q/proj stay n_embd x n_embd and
    k/v stay n_embd x n_embd/g, so every proportion is param-matched to the p=0 baseline exactly.
    """
    n_head, n_embd, nd = cfg.n_head, cfg.n_embd, cfg.nanohead_dim
    g = n_head // cfg.n_kv_head
    p = cfg.nanohead_proportion
    if cfg.arch == "nanogpt":  # n_head heads of n_embd/n_head, without RoPE: any width (its config refuses nano heads)
        return HeadSplit(n_head, n_embd // n_head, 0, nd, n_head, 0)
    if p == 0:
        _check(
            (n_embd // n_head) % 2 == 0,
            "n_head",
            n_head,
            f"such that the head dim n_embd/n_head={n_embd // n_head} is even (RoPE rotates pairs)",
        )
        return HeadSplit(n_head, n_embd // n_head, 0, nd, cfg.n_kv_head, 0)
    valid = [
        k
        for k in range(g, n_embd // nd + 1, g)
        if (n_embd - k * nd) % (2 * n_head) == 0 and (n_embd - k * nd) // n_head >= 2
    ]
    if not valid:
        raise ValueError(
            f"GPTConfig.nanohead_proportion={p!r} with nanohead_dim={nd}: no split of n_embd={n_embd} into "
            f"{n_head} even-width normal heads plus nano heads (count divisible by {g}) exists; "
            f"choose n_embd, n_head or nanohead_dim so that n_embd - k*nanohead_dim is a multiple of 2*n_head"
        )
    target = p * n_embd / nd
    k = min(valid, key=lambda k: (abs(k - target), k))
    return HeadSplit(n_head, (n_embd - k * nd) // n_head, k, nd, n_head // g, k // g)
