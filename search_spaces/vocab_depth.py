"""Vocabulary size vs depth (note 002): at a fixed budget split about evenly between the input embedding,
the lm_head and the blocks, which vocabulary (and so which depth/width) gives the best bits per byte?
One rustbpe tokenizer per vocab size; tied vs untied embeddings as an axis (tied keeps the dims, so it
has one table fewer: the note's plan of tying later). 20 tokens per parameter at paper.

The design is the note's: 38M split 1:1:1, 64-dim heads, and its three candidates d29 x 192 at vocab 65,536,
d4 x 512 at 24,576 and d7 x 384 at 32,768. `cpu` and `smoke` run the same three at 1/4 and 1/16 of the width,
head dim and vocab (and 1/16 and 1/256 of the budget), so every share is the note's. Another vocab_size is in
the design when a depth of at least MIN_DEPTH gives each share within SPLIT_TOLERANCE of a third; otherwise it
runs on the split nearest a third each, with in_design=False and the variant marked `_offdesign`.

Learning rates follow the width by nanochat's rule, as base_train did when the note was written (c6b7ab7):
Muon at 0.02 on the blocks' matrices (an orthogonalised update: no width factor), AdamW embedding 0.2 and
lm_head 0.004 x (width / 768)^-0.5. A tied table trains at the lm_head's lr (trainables.train.table_lrs).
"""

import math
from functools import cache

from . import fidelity
from .common import FINEWEB_EDU, nanochat_sizes, seed_suffix
from .fidelity import FidelityRow
from .spec import StudySpec

# The note's candidates at each profile's scale: (vocab, depth, width) = note's (65536, 29, 192), (24576, 4, 512),
# (32768, 7, 384) with width, head dim and vocab / 4 (cpu) or / 16 (smoke); the parameters / 16 and / 256.
VOCABS = {
    "smoke": [4096, 1536, 2048],
    "cpu": [16384, 6144, 8192],
    "gpu": [65536, 24576, 32768],
    "paper": [65536, 24576, 32768],
}
BUDGETS = {"smoke": 38e6 / 256, "cpu": 38e6 / 16, "gpu": 38e6, "paper": 38e6}
HEAD_DIMS = {"smoke": 4, "cpu": 16, "gpu": 64, "paper": 64}
SPLIT_TOLERANCE = (
    0.01  # each share within 1 point of a third: the note's candidates are within 0.43 (d29's blocks 33.76%)
)
MIN_DEPTH = 3  # the note: "Too shallow (d2) = not practical"
# base_train when the note was written (c6b7ab7): Muon for the matrices, AdamW for the tables; lrs as the width rule sets
# them (nanochat_sizes: embedding 0.2 and lm_head 0.004 at width 768); no weight decay
NANOCHAT = dict(
    nanochat_size_rules=True,
    optimizer="muon",
    muon_adjust_lr="original",
    lr=0.02,
    beta1=0.8,
    beta2=0.95,
    adam_eps=1e-10,
)
NANOCHAT_LRS = dict(embedding_lr=0.2, lm_head_lr=0.004, weight_decay=0.0)
# What resolve derives, from what, and what to set instead (study.run refuses a --set it would replace).
DERIVED = {
    **dict.fromkeys(
        ("n_layer", "n_embd", "n_head"),
        (
            "budget, head_dim and vocab_size (the candidate that balances embedding, lm_head and blocks)",
            "set those instead",
        ),
    ),
    "tokenizer": ("vocab_size (one bpe:N tokenizer per vocab size)", "set vocab_size instead"),
}


def axes(profile) -> dict:
    return {"vocab_size": VOCABS[profile.name], "tie_embeddings": [False, True]}


def base(profile) -> dict:
    keys = {**profile.train_keys(), "budget": BUDGETS[profile.name], "head_dim": HEAD_DIMS[profile.name], **NANOCHAT}
    del keys["aspect_ratio"]  # the balance rule picks depth/width (resolve refuses an aspect_ratio)
    if profile.name == "paper":  # base_train's batch, schedule and eval (c6b7ab7); Chinchilla: ~20 tokens per parameter
        keys.update(
            max_tokens=int(20 * BUDGETS["paper"]),
            corpus=FINEWEB_EDU,
            total_batch_tokens=524_288,
            warmup_steps=0,
            schedule="linear",
            warmdown_frac=0.2,
            min_lr_frac=0.0,
            muon_momentum_warmup=300,
            eval_every=250,
            eval_batches=160,
        )  # 160 x 32 x 2048 = 20 x 524,288 val tokens
    if profile.name == "gpu":  # the embedded corpus would be ~96 epochs
        keys["corpus"] = FINEWEB_EDU
    return keys


def split_error(c) -> float:
    """How far the candidate's largest miss of a third is, over embedding / lm_head / blocks (untied)."""
    return max(abs(s - 1 / 3) for s in c.shares.values())


@cache
def balanced_candidate(budget: float, vocab_size: int, head_dim: int, model_keys: tuple = ()):
    """(candidate, in_design) for a vocab: among the solver's candidates (at each depth, the width nearest the
    budget) of depth >= MIN_DEPTH with each share within SPLIT_TOLERANCE of a third, the one nearest the budget,
    as the note's calculator chose d29 (38.0M, 0.01% off) over d28 (37.6M); with none, the candidate nearest a
    third each, outside the design. model_keys: other GPTConfig fields, as (key, value) pairs (untied)."""
    from trainables.model import solve_architecture

    candidates = solve_architecture(budget, vocab_size, head_dim, tolerance=0.10, **dict(model_keys))
    design = [c for c in candidates if c.n_layer >= MIN_DEPTH and split_error(c) <= SPLIT_TOLERANCE]
    if design:
        return min(design, key=lambda c: abs(c.rel_error)), True
    return min(candidates, key=lambda c: (split_error(c), abs(c.rel_error))), False


def resolve(config: dict) -> dict:
    if config.get("budget") is None:  # the depth/width comes from the budget: without one there are no dims
        raise ValueError(
            f"budget=None: vocab_depth sizes every trial from its budget; give one, e.g. budget={BUDGETS['cpu']:g}"
        )
    if "aspect_ratio" in config:  # not in base(): only a --set puts it here, and the balance rule has no use for it
        raise ValueError(
            f"aspect_ratio={config['aspect_ratio']!r}: vocab_depth picks depth and width by balancing embedding, "
            f"lm_head and blocks, not by aspect ratio; set budget, head_dim or vocab_size instead"
        )
    tied = config["tie_embeddings"]
    if tied and config.get("embedding_lr") is not None:
        raise ValueError(
            f"embedding_lr={config['embedding_lr']!r}: a tied table trains at lm_head_lr (it makes the "
            f"logits too), so embedding_lr would go unused; set lm_head_lr, or tie_embeddings=false"
        )
    c, in_design = balanced_candidate(config["budget"], config["vocab_size"], config["head_dim"], _model_keys(config))
    out = {k: v for k, v in config.items() if k not in ("budget", "vocab_size")}
    out.update(
        tokenizer=f"bpe:{config['vocab_size']}",
        n_layer=c.n_layer,
        n_embd=c.n_embd,
        n_head=c.n_head,
        target_params=config["budget"],
        in_design=in_design,
    )
    out.setdefault("init", "gpt2" if tied else "nanochat")  # nanochat's init is for its untied tables (GPTConfig)
    out = nanochat_sizes(out, **NANOCHAT_LRS)
    if tied:
        out.pop("embedding_lr", None)  # no table trains at it: the tied one is the lm_head's
    return out


def _model_keys(config: dict) -> tuple:
    """The GPTConfig keys that change a count (mlp_ratio, mixer, ...), for the split; the dims are the solver's."""
    from dataclasses import fields

    from trainables.model import GPTConfig

    skip = {"vocab_size", "n_layer", "n_embd", "n_head", "n_kv_head", "tie_embeddings", "init"}
    return tuple(sorted((f.name, config[f.name]) for f in fields(GPTConfig) if f.name in config and f.name not in skip))


def variant(config: dict) -> str:
    vocab = config.get("vocab_size") or int(config["tokenizer"].split(":")[1])
    return (
        f"v{vocab}_d{config['n_layer']}"
        + ("_tied" if config["tie_embeddings"] else "")
        + ("" if config.get("in_design", True) else "_offdesign")
    )


def trial_name(config: dict) -> str:
    return f"vocab_depth_{variant(config)}" + seed_suffix(config)


# The note's three candidates (vocab, depth, width), 64-dim heads, inside a 1:1:1 split of 38M.
NOTE_CANDIDATES = {(65536, 29, 192), (24576, 4, 512), (32768, 7, 384)}


def note_vs_run(trials: list[dict], workers: int) -> tuple[FidelityRow, ...]:
    """Note 002 (a session plan on nanochat's base_train of October 2025; no results) beside the plan."""
    from trainables.model import count_params

    t = fidelity.first(trials)
    g, tc = t["gpt"], t["train"]
    shape = lambda u: (u["gpt"].vocab_size, u["gpt"].n_layer, u["gpt"].n_embd)
    arms = fidelity.values(
        trials,
        lambda u: (
            f"v{u['gpt'].vocab_size} d{u['gpt'].n_layer}x{u['gpt'].n_embd}"
            f"{' tied' if u['gpt'].tie_embeddings else ''} {count_params(u['gpt'])['total'] / 1e6:.1f}M"
        ),
    )
    outside = list(dict.fromkeys(f"v{v} d{d}" for v, d, _ in map(shape, trials) if (v, d, _) not in NOTE_CANDIDATES))
    arms_reason = "; ".join(
        (
            [f"outside the note's candidates: {', '.join(outside)} (the solver's most even split at each vocab)"]
            if outside
            else []
        )
        + (
            ["d28 at 65,536 where the note has d29: the solver takes the split nearest a third each"]
            if any(shape(u)[:2] == (65536, 28) for u in trials)
            else []
        )
        + (
            ["tied arms run beside the untied, where the note ties after"]
            if any(u["gpt"].tie_embeddings for u in trials)
            else []
        )
    )
    widths = sorted({u["gpt"].n_embd for u in trials})
    scale = lambda u: (u["gpt"].n_embd / 768) ** -0.5  # base_train's AdamW lrs were tuned at width 768
    muon = all(
        u["train"].optimizer == "muon"
        and u["train"].lr == 0.02
        and (
            u["gpt"].tie_embeddings
            or (
                math.isclose(fidelity.role_lrs(u)["embedding"], 0.2 * scale(u))
                and math.isclose(fidelity.role_lrs(u)["lm_head"], 0.004 * scale(u))
            )
        )
        for u in trials
    )
    per_arm = "; ".join(
        dict.fromkeys(f"v{u['gpt'].vocab_size} d{u['gpt'].n_layer}: {fidelity.tables(u)}" for u in trials)
    )
    optimizer_reason = "; ".join(
        (
            [f"not base_train's Muon 0.02 and width rule for the AdamW lrs (widths {widths[0]} to {widths[-1]})"]
            if not muon
            else []
        )
        + (
            ["the note sets no lr for a tied table (it ties after the untied runs)"]
            if any(u["gpt"].tie_embeddings for u in trials)
            else []
        )
    )
    per_step = {u["per_step"] for u in trials}
    budget_tokens = all(u["train"].max_tokens == int(20 * u["config"]["target_params"]) for u in trials)
    return (
        FidelityRow(
            "arms",
            "3 candidates in a 1:1:1 split of 38M (64-dim heads): d29 x 192 at vocab 65,536 (38.0M), "
            "d4 x 512 at 24,576 (37.7M, recommended), d7 x 384 at 32,768 (37.6M); d2 'too shallow', d7+ 'too "
            "deep'; tie wte and lm_head later",
            arms,
            arms_reason,
        ),
        FidelityRow(
            "model",
            "nanochat's GPT (RoPE, QK norm, relu^2, untied, logit softcap 15), base_train edited for 64-dim heads",
            fidelity.model(g) + " (the first arm)",
            "" if g.arch == "nanochat" and g.n_embd // g.n_head == 64 else "not nanochat's GPT with 64-dim heads",
        ),
        FidelityRow(
            "optimizer",
            "base_train (October 2025): Muon lr 0.02 on the matrices; AdamW embedding 0.2, lm_head "
            "0.004, both x (width/768)^-0.5, betas (0.8, 0.95), eps 1e-10; clip 1.0",
            f"{fidelity.optimizer(t)} (the first arm); per arm, {per_arm}",
            optimizer_reason,
        ),
        FidelityRow(
            "schedule",
            "base_train (October 2025): no warmup; constant, then the last 20% linearly to 0",
            fidelity.values(trials, fidelity.schedule),
            ""
            if all(
                (u["train"].warmup_steps, u["train"].schedule, u["train"].warmdown_frac, u["train"].min_lr_frac)
                == (0, "linear", 0.2, 0.0)
                for u in trials
            )
            else "this project's default schedule",
        ),
        FidelityRow(
            "batch",
            "torchrun on 8 GPUs, device_batch_size 32 x 2048: 524,288 tokens per step",
            fidelity.batch(t, workers),
            ""
            if per_step == {524_288}
            else f"one GPU without gradient accumulation: {524_288 / max(per_step):g}x fewer tokens per step, as many "
            f"times more steps",
        ),
        FidelityRow(
            "tokens",
            "Chinchilla's 20 tokens per parameter: 754M for d4's 37.7M",
            fidelity.values(trials, fidelity.steps),
            "20 x the 38M budget for every arm (the same data for each), not 20 x each arm's own count"
            if budget_tokens
            else "not 20 tokens per parameter",
        ),
        FidelityRow(
            "tokenizer",
            "one rustbpe tokenizer per vocab (tok_train --max_chars=4000000000)",
            f"{fidelity.values(trials, lambda u: u['train'].tokenizer)}, each trained with rustbpe on this run's "
            f"train split",
            "trained on this run's sample",
        ),
        FidelityRow(
            "data",
            "nanochat's FineWeb-edu shards (~15 for 754M tokens); val = the last shard",
            fidelity.data(tc),
            "its first 1,000,000 documents, fetched once; val by document hash, not the last shard"
            if tc.corpus == FINEWEB_EDU
            else "not FineWeb-edu",
        ),
        FidelityRow(
            "precision",
            "base_train: bf16 autocast, torch.compile",
            fidelity.precision(tc),
            "" if (tc.dtype, tc.compile) == ("bfloat16", True) else "not bf16 + compile",
        ),
        FidelityRow(
            "metric",
            "bits per byte: base_train's val bpb every 250 steps over 20 x 524,288 tokens",
            fidelity.evaluation(t),
            ""
            if (tc.eval_every, tc.eval_batches * tc.batch_size * g.seq_len) == (250, 20 * 524_288)
            else "fewer val tokens per eval than base_train",
        ),
        FidelityRow(
            "batches",
            "base_train's loader (October 2025): the shards' documents, each after a BOS, as one "
            "stream cut into consecutive rows of 2048, in shard order",
            fidelity.loader(t, trials),
            "this project's loader: the same kind of windows, visited in a shuffled order",
        ),
    )


STUDY = StudySpec(
    name="vocab_depth",
    family="vocab_depth",
    note="002_ae9661a3f257ab4b.txt",
    hypothesis="At a fixed budget split evenly between embedding, lm_head and blocks, which vocabulary size "
    "(and so depth/width) gives the best bits per byte; does tying the embeddings help? Arms: the "
    "note's d29/65536, d4/24576, d7/32768 (scaled down below gpu); lrs by nanochat's width rule "
    "(Muon 0.02; AdamW embedding 0.2, lm_head 0.004, x (width/768)^-0.5); a tied table at the "
    "lm_head's lr.",
    base=base,
    axes=axes,
    resolve=resolve,
    variant=variant,
    trial_name=trial_name,
    views=("vocab_depth",),
    derived=DERIVED,
    fidelity=note_vs_run,
)
