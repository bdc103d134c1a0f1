"""Helpers shared by the study families: derived keys that every family resolves the same way."""
from functools import lru_cache


@lru_cache(maxsize=None)
def tokenizer_vocab_size(name: str) -> int:
    """The vocab a tokenizer name implies, without training anything: bpe:N has exactly N tokens."""
    if name.startswith("bpe:"):
        from trainables.data.tokenizers import parse_bpe_name
        return parse_bpe_name(name)
    from trainables.data import get_tokenizer
    return get_tokenizer(name).n_vocab


def architecture(config: dict, **baseline) -> dict:
    """Fixes n_layer/n_embd/n_head from config['budget'] (the solver), for the study's baseline architecture.

    Variants then change only what they change (a proportion, softmax1, ...), on the same dims: that is what
    param-matching to the baseline means here. `baseline` holds the baseline's own model keys (e.g.
    nanohead_proportion=0). Without a budget the config's dims are kept as they are."""
    from trainables.model import GPTConfig, solve_architecture
    from dataclasses import fields
    if config.get("budget") is None:  # dims not given are GPTConfig's defaults, written out for the trial's name
        return {**{f.name: f.default for f in fields(GPTConfig) if f.name in ("n_layer", "n_embd", "n_head")}, **config}
    model_keys = {f.name for f in fields(GPTConfig)} - {"vocab_size", "n_layer", "n_embd", "n_head", "n_kv_head"}
    overrides = {k: v for k, v in config.items() if k in model_keys}
    overrides.update(baseline)
    vocab = tokenizer_vocab_size(config["tokenizer"])
    head_dim = config.get("head_dim", 64)
    try:
        best = solve_architecture(config["budget"], vocab, head_dim, aspect_ratio=config.get("aspect_ratio", 64.0),
                                  **overrides)[0]
    except ValueError:
        # The solver skips every width whose GPTConfig does not build, so a bad model key (nanohead_dim=0, an
        # odd head_dim) surfaces as "no architecture within 5%": name the key instead, when one is to blame.
        GPTConfig(vocab_size=vocab, n_layer=1, n_embd=head_dim, n_head=1, **overrides)
        raise
    out = {k: v for k, v in config.items() if k not in ("budget",)}
    out.update(n_layer=best.n_layer, n_embd=best.n_embd, n_head=best.n_head, target_params=config["budget"])
    return out


def seed_suffix(config: dict) -> str:
    return f"_s{config['seed']}" if config.get("seed") else ""
