"""Vocabulary size vs depth (seed 002): at a fixed budget split about evenly between the input embedding,
the lm_head and the blocks, which vocabulary (and so which depth/width) gives the best bits per byte?
One rustbpe tokenizer per vocab size; tied vs untied embeddings as an axis (tied keeps the dims, so it
has one table fewer: the seed's plan of tying later). 64-dim heads; 20 tokens per parameter at paper."""
from functools import lru_cache

from .common import seed_suffix

VOCABS = {"smoke": [512, 1024], "cpu": [2048, 4096, 8192], "gpu": [4096, 8192, 16384, 32768, 65536],
          "paper": [4096, 8192, 16384, 24576, 32768, 65536]}
BUDGETS = {"smoke": 2.0e5, "cpu": 1.5e6, "gpu": 38e6, "paper": 38e6}
# What resolve derives, from what, and what to set instead (study.run refuses a --set it would replace).
DERIVED = {**dict.fromkeys(("n_layer", "n_embd", "n_head"), (
               "budget, head_dim and vocab_size (the candidate that balances embedding, lm_head and blocks)",
               "set those instead")),
           "tokenizer": ("vocab_size (one bpe:N tokenizer per vocab size)", "set vocab_size instead")}


def axes(profile) -> dict:
    return {"vocab_size": VOCABS[profile.name], "tie_embeddings": [False, True]}


def base(profile) -> dict:
    keys = {**profile.train_keys(), "budget": BUDGETS[profile.name], "head_dim": 32 if profile.name in ("smoke", "cpu") else 64}
    del keys["aspect_ratio"]  # the balance rule picks depth/width (resolve refuses an aspect_ratio)
    if profile.name == "paper":
        keys.update(max_tokens=int(20 * BUDGETS["paper"]))  # Chinchilla: ~20 tokens per parameter
    return keys


@lru_cache(maxsize=None)
def balanced_candidate(budget: float, vocab_size: int, head_dim: int):
    """The solver's candidate whose embedding / lm_head / blocks shares are closest to a third each (untied)."""
    from trainables.model import solve_architecture
    candidates = solve_architecture(budget, vocab_size, head_dim, tolerance=0.10)
    return min(candidates, key=lambda c: (max(abs(s - 1 / 3) for s in c.shares.values()), abs(c.rel_error)))


def resolve(config: dict) -> dict:
    if config.get("budget") is None:  # the depth/width comes from the budget: without one there are no dims
        raise ValueError(f"budget=None: vocab_depth sizes every trial from its budget; give one, e.g. budget={BUDGETS['cpu']:g}")
    if "aspect_ratio" in config:  # not in base(): only a --set puts it here, and the balance rule has no use for it
        raise ValueError(f"aspect_ratio={config['aspect_ratio']!r}: vocab_depth picks depth and width by balancing embedding, "
                         f"lm_head and blocks, not by aspect ratio; set budget, head_dim or vocab_size instead")
    c = balanced_candidate(config["budget"], config["vocab_size"], config["head_dim"])
    out = {k: v for k, v in config.items() if k not in ("budget", "vocab_size")}
    out.update(tokenizer=f"bpe:{config['vocab_size']}", n_layer=c.n_layer, n_embd=c.n_embd, n_head=c.n_head,
               target_params=config["budget"])
    return out


def variant(config: dict) -> str:
    vocab = config.get("vocab_size") or int(config["tokenizer"].split(":")[1])
    return f"v{vocab}_d{config['n_layer']}" + ("_tied" if config["tie_embeddings"] else "")


def trial_name(config: dict) -> str:
    return f"vocab_depth_{variant(config)}" + seed_suffix(config)
