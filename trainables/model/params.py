"""Parameter and FLOP accounting from a config alone, and the architecture solver.

count_params(cfg) equals the numel of build_model(cfg) for every variant (tested over a grid), so studies
can plan and param-match without building models; a registered mixer's own count (or one of its layers built on
the meta device) enters as the `mixer` component, so it is param-matched like the built-ins.
"""

import math
from dataclasses import dataclass

from .config import GPTConfig, nanohead_split
from .mixers import mixer_flops, mixer_params


def count_params(cfg: GPTConfig) -> dict:
    """Parameters by component. Tied embeddings are counted once, under `embedding` (lm_head = 0)."""
    if cfg.arch == "nanogpt":
        return _count_nanogpt(cfg)
    C, L = cfg.n_embd, cfg.n_layer
    embedding = cfg.vocab_size * C
    lm_head = 0 if cfg.tie_embeddings else cfg.vocab_size * C
    if cfg.mixer == "attention":
        s = nanohead_split(cfg)
        kv_width = s.n_kv_normal * s.normal_dim + s.n_kv_nano * s.nano_dim
        mixer = 2 * C * C + 2 * C * kv_width  # c_q, c_proj; c_k, c_v
    elif cfg.mixer == "toeplitz":
        mixer = cfg.n_head * cfg.seq_len + (
            2 * C * (C + cfg.toep_proj_bias) if cfg.toep_proj else 0
        )  # filters; in/out proj (+ biases)
    else:
        mixer = mixer_params(cfg)  # one layer of a registered mixer
    mlp = 2 * C * cfg.mlp_hidden
    blocks = L * (mixer + mlp)
    total = embedding + lm_head + blocks
    return dict(
        embedding=embedding,
        lm_head=lm_head,
        blocks=blocks,
        mixer=L * mixer,
        mlp=L * mlp,
        total=total,
        non_embedding=total - embedding,
    )


def _count_nanogpt(cfg: GPTConfig) -> dict:
    """nanoGPT's model: `embedding` holds the token and the position tables; `blocks` holds every block (its two
    LayerNorms included) and the final LayerNorm ln_f, so it is more than mixer + mlp; biases where cfg.bias."""
    C, L, H, b = cfg.n_embd, cfg.n_layer, cfg.mlp_hidden, int(cfg.bias)
    embedding = cfg.vocab_size * C + cfg.seq_len * C  # wte, wpe
    lm_head = 0 if cfg.tie_embeddings else cfg.vocab_size * C
    mixer = 3 * C * C + 3 * C * b + C * C + C * b  # c_attn, c_proj
    mlp = 2 * C * H + (H + C) * b  # c_fc, c_proj
    norm = C * (1 + b)  # one LayerNorm: weight (and bias)
    blocks = L * (mixer + mlp + 2 * norm) + norm
    total = embedding + lm_head + blocks
    return dict(
        embedding=embedding,
        lm_head=lm_head,
        blocks=blocks,
        mixer=L * mixer,
        mlp=L * mlp,
        total=total,
        non_embedding=total - embedding,
    )


def flops_per_token(cfg: GPTConfig) -> float:
    """Training FLOPs per token (forward + backward), as nanochat's estimate_flops / Chinchilla:

        6 x (matmul weights: every parameter but the input embedding table; the lm_head is a matmul
             and counts even when tied)
      + attention: 12 x n_layer x (query width = n_embd) x seq_len   (QK^T and AV, forward 4*C*T, x3)
      + Toeplitz:   6 x n_layer x n_embd x seq_len                   (one multiply-add per channel and
                                                                      lag, forward 2*C*T, x3; its filters
                                                                      are counted here, not in the 6N term)
      + a registered mixer: n_layer x its flops_per_token(cfg)       (0 when it declares none: then only
                                                                      its parameters count, in the 6N term)
    Both built-in mixing terms count the full seq_len window, not the causal half, as nanochat does.
    arch="nanogpt": the position table is an input table too, so with tied embeddings this is nanoGPT's own
    estimate_mfu count, 6 N + 12 L H Q T with N = get_num_params() (every parameter but wpe).
    """
    p = count_params(cfg)
    matmul = p["total"] - p["embedding"] + cfg.vocab_size * cfg.n_embd * cfg.tie_embeddings
    if cfg.mixer == "attention":
        return 6 * matmul + 12 * cfg.n_layer * cfg.n_embd * cfg.seq_len
    if cfg.mixer == "toeplitz":
        matmul -= cfg.n_layer * cfg.n_head * cfg.seq_len
        return 6 * matmul + 6 * cfg.n_layer * cfg.n_embd * cfg.seq_len
    return 6 * matmul + cfg.n_layer * mixer_flops(cfg)


@dataclass(frozen=True)
class Candidate:
    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int
    params: dict  # count_params of the candidate
    rel_error: float  # (params - target) / target

    @property
    def shares(self) -> dict:
        """Fractions of the total held by the input embedding, the lm_head and the blocks (the note's table)."""
        t = self.params["total"]
        return {k: self.params[k] / t for k in ("embedding", "lm_head", "blocks")}

    @property
    def aspect_ratio(self) -> float:
        return self.n_embd / self.n_layer

    def config(self, **overrides) -> GPTConfig:
        return GPTConfig(
            vocab_size=self.vocab_size, n_layer=self.n_layer, n_embd=self.n_embd, n_head=self.n_head, **overrides
        )


def solve_architecture(
    target_params: float,
    vocab_size: int,
    head_dim: int = 64,
    *,
    tolerance: float = 0.05,
    aspect_ratio: float | None = None,
    max_layers: int = 64,
    **overrides,
) -> list[Candidate]:
    """Depth/width candidates within `tolerance` of a parameter budget.

    For each depth 1..max_layers, the width is the multiple of head_dim (n_head = width / head_dim) whose
    total parameter count is nearest the target; candidates off by more than `tolerance` are dropped.
    `overrides` are any other GPTConfig fields (tie_embeddings, mlp_ratio, mixer, nanohead_proportion,
    seq_len, ...), so the count is exact for the variant being matched. Sorted by depth, or, with
    `aspect_ratio` (width/depth; nanochat uses 64), by closeness to it: the first is then the pick.
    Raises ValueError when no candidate is within tolerance.
    """
    if target_params <= 0:
        raise ValueError(f"target_params={target_params!r}: must be a positive number of parameters")
    candidates = []
    for n_layer in range(1, max_layers + 1):
        best = None
        for n_head in range(1, 4097):
            try:
                cfg = GPTConfig(
                    vocab_size=vocab_size, n_layer=n_layer, n_embd=n_head * head_dim, n_head=n_head, **overrides
                )
            except ValueError:
                continue  # e.g. no nano-head split at this width
            p = count_params(cfg)
            err = (p["total"] - target_params) / target_params
            if best is None or abs(err) < abs(best.rel_error):
                best = Candidate(n_layer, cfg.n_embd, n_head, vocab_size, p, err)
            if err > 0:
                break  # wider only grows further past the target
        if best is not None and abs(best.rel_error) <= tolerance:
            candidates.append(best)
    if not candidates:
        raise ValueError(
            f"target_params={target_params:.4g}: no architecture with vocab_size={vocab_size} and "
            f"head_dim={head_dim} within {tolerance:.0%} (the embeddings alone hold "
            f"{vocab_size * head_dim * (1 if overrides.get('tie_embeddings') else 2):.4g} at the narrowest width)"
        )
    if aspect_ratio is not None:
        candidates.sort(key=lambda c: (abs(math.log(c.aspect_ratio / aspect_ratio)), abs(c.rel_error)))
    return candidates


def nanochat_shape(depth: int, aspect_ratio: float = 64, head_dim: int = 128) -> tuple[int, int, int]:
    """(n_layer, n_embd, n_head) for a depth, as nanochat's scripts/base_train.py derives them: the width
    depth x aspect_ratio is nudged up to a multiple of head_dim, so every head is exactly head_dim wide."""
    n_embd = math.ceil(depth * aspect_ratio / head_dim) * head_dim
    return depth, n_embd, n_embd // head_dim


def nanochat_depth(
    target_params: float,
    vocab_size: int,
    head_dim: int = 128,
    *,
    aspect_ratio: float = 64,
    max_layers: int = 64,
    **overrides,
) -> Candidate:
    """The depth whose nanochat shape (nanochat_shape) has the total parameter count nearest the target: how the
    nanohead note sized its "~50M" model (runs/nanohead_experiment.py searched the depth, then base_train built
    it). No tolerance: the widths a depth allows are far apart (at vocab 32768 and 50M, d7 is 512 wide: +11%).
    `overrides` are other GPTConfig fields, as in solve_architecture. Ties go to the shallower depth."""
    if target_params <= 0:
        raise ValueError(f"target_params={target_params!r}: must be a positive number of parameters")
    best = None
    for depth in range(1, max_layers + 1):
        n_layer, n_embd, n_head = nanochat_shape(depth, aspect_ratio, head_dim)
        try:
            cfg = GPTConfig(vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head, **overrides)
        except ValueError:
            continue  # e.g. an odd head_dim (RoPE rotates pairs)
        p = count_params(cfg)
        err = (p["total"] - target_params) / target_params
        if best is None or abs(err) < abs(best.rel_error):
            best = Candidate(n_layer, n_embd, n_head, vocab_size, p, err)
        if err > 0:
            break  # deeper only grows further past the target
    if best is None:
        raise ValueError(
            f"target_params={target_params:.4g}: no nanochat shape (width = depth x {aspect_ratio:g} rounded "
            f"up to a multiple of head_dim={head_dim}) builds with vocab_size={vocab_size}"
        )
    return best


def size_model(
    budget: float,
    vocab_size: int,
    head_dim: int = 64,
    *,
    aspect_ratio: float = 64.0,
    shape_rule: str = "solver",
    tolerance: float = 0.05,
    **model_keys,
) -> Candidate:
    """The dims a budget gives: the one rule both a study's resolve and a trial config with a budget go through.
    shape_rule "solver": solve_architecture's pick nearest aspect_ratio; "nanochat": nanochat's depth rule.
    model_keys are the other GPTConfig keys, n_kv_head (a count of kv heads) among them: only widths whose head
    count it divides are candidates. tolerance: the solver's (a compute-matched study trains any size near its
    target, since its tokens follow the size built)."""
    if shape_rule == "nanochat":
        return nanochat_depth(budget, vocab_size, head_dim, aspect_ratio=aspect_ratio, **model_keys)
    return solve_architecture(
        budget, vocab_size, head_dim, aspect_ratio=aspect_ratio, tolerance=tolerance, **model_keys
    )[0]
