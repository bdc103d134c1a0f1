"""Helpers shared by the study families: derived keys that every family resolves the same way."""

from functools import cache

# The notes' corpora, the paper profiles' defaults (hf:NAME[:CONFIG[:SPLIT]][:N documents]; README, "Data and
# licenses"). N is what keeps each paper plan under max_epochs passes (the dry-run's epochs column).
FINEWEB_EDU = "hf:karpathy/fineweb-edu-100b-shuffle:1000000"  # nanochat's base_train data (notes 000-002)
SIMPLE_STORIES = "hf:SimpleStories/SimpleStories:1000000"  # note 003
REDDIT = "hf:HuggingFaceGECLM/REDDIT_comments::todayilearned:15000000"  # note 004's own Reddit sample is not public


@cache
def tokenizer_vocab_size(name: str) -> int:
    """The vocab a tokenizer name implies, without training anything: bpe:N has exactly N tokens."""
    if name.startswith("bpe:"):
        from trainables.data.tokenizers import parse_bpe_name

        return parse_bpe_name(name)
    from trainables.data import get_tokenizer

    return get_tokenizer(name).n_vocab


def architecture(config: dict, tolerance: float = 0.05, **baseline) -> dict:
    """Fixes n_layer/n_embd/n_head from config['budget'] (trainables.model.size_model: the solver, or nanochat's
    depth rule with shape_rule="nanochat"), for the study's baseline architecture.

    Variants then change only what they change (a proportion, softmax1, ...), on the same dims: that is what
    param-matching to the baseline means here. `baseline` holds the baseline's own model keys (e.g.
    nanohead_proportion=0); without it every arm is matched to the budget with its own keys. Without a budget
    the config's dims are kept as they are."""
    from dataclasses import fields

    from trainables.model import GPTConfig
    from trainables.model.params import size_model

    if config.get("budget") is None:  # dims not given are GPTConfig's defaults, written out for the trial's name
        return {**{f.name: f.default for f in fields(GPTConfig) if f.name in ("n_layer", "n_embd", "n_head")}, **config}
    model_keys = {f.name for f in fields(GPTConfig)} - {"vocab_size", "n_layer", "n_embd", "n_head"}
    overrides = {k: v for k, v in config.items() if k in model_keys}
    overrides.update(baseline)
    vocab = tokenizer_vocab_size(config["tokenizer"])
    head_dim = config.get("head_dim", 64)
    try:
        best = size_model(
            config["budget"],
            vocab,
            head_dim,
            aspect_ratio=config.get("aspect_ratio", 64.0),
            shape_rule=config.get("shape_rule", "solver"),
            tolerance=tolerance,
            **overrides,
        )
    except ValueError:
        # The solver skips every width whose GPTConfig does not build, so a bad model key (nanohead_dim=0, an
        # odd head_dim) surfaces as "no architecture within 5%": name the key instead, when one is to blame.
        probe = {k: v for k, v in overrides.items() if k != "n_kv_head"}  # a count one head cannot have
        GPTConfig(vocab_size=vocab, n_layer=1, n_embd=head_dim, n_head=1, **probe)
        raise
    out = {k: v for k, v in config.items() if k not in ("budget", "shape_rule")}  # consumed: the dims hold them
    out.update(n_layer=best.n_layer, n_embd=best.n_embd, n_head=best.n_head, target_params=config["budget"])
    return out


def nanochat_sizes(config: dict, *, embedding_lr: float, lm_head_lr: float, weight_decay: float) -> dict:
    """With nanochat_size_rules: nanochat's size rules for the keys not given, from a version's base values. Its
    AdamW lrs were tuned at width 768 and scale as (n_embd / 768)^-0.5 (gpt.py setup_optimizers, every version);
    Muon's weight decay was tuned at depth 12 and scales as (12 / n_layer)^2 (base_train from 2c4473d; 0 before)."""
    rules = config.get("nanochat_size_rules", False)
    if not isinstance(rules, bool):
        raise ValueError(f"nanochat_size_rules={rules!r}: must be true or false")
    if not rules:
        return config
    scale = (config["n_embd"] / 768) ** -0.5
    sizes = dict(
        embedding_lr=embedding_lr * scale,
        lm_head_lr=lm_head_lr * scale,
        weight_decay=weight_decay * (12 / config["n_layer"]) ** 2,
    )
    return {**sizes, **config}


SEED_KEYS = ("seed", "init_seed", "data_seed")  # replicates of one arm, never an arm of their own


def seed_suffix(config: dict) -> str:
    """_s1 for seed 1 (nothing for seed 0), then _i3 / _d2 for an init_seed / data_seed the config sets itself, so
    trials that vary one seed apart from the other keep distinct names."""
    parts = [f"_s{config['seed']}"] if config.get("seed") else []
    parts += [f"_{key[0]}{config[key]}" for key in ("init_seed", "data_seed") if config.get(key) is not None]
    return "".join(parts)
