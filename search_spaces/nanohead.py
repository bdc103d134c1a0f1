"""Nano heads (notes 000/001): mix 2-5 dim heads without RoPE into a nanochat GPT.

Hypothesis: tiny heads learn simple patterns (copy the previous token, attend to a related word) for far
fewer parameters, so some share of nano heads (0.2-0.4) beats the baseline; 0.8 degrades.
Every proportion runs on the p=0 baseline's dims; the split rule keeps the parameter count identical.

The `paper` profile is nanochat's scripts/base_train.py as the note ran it (`--num-iterations=500`, its other
defaults), at karpathy/nanochat 98eed6d: it has the MuonAdamW optimizer that the note's nanohead fork imports, and
it is the last version whose batch is 524,288 tokens at every depth. Its sizes follow the depth:
the width (depth x 64, rounded up to a multiple of the 128-wide heads), the AdamW lrs (tuned at width 768,
x (width / 768)^-0.5) and Muon's weight decay (tuned at depth 12, x (12 / depth)^2). With nanochat_size_rules,
resolve() fills those from the model it sizes unless they are given: `--set embedding_lr=...` is the lr used.
"""

from . import fidelity
from .common import FINEWEB_EDU, architecture, nanochat_sizes, seed_suffix
from .fidelity import FidelityRow
from .spec import StudySpec

AXES = {"nanohead_proportion": [0.0, 0.2, 0.4, 0.6, 0.8]}
SEARCH_AXES = ("nanohead_proportion", "nanohead_dim", "n_layer", "lr")
# base_train.py's defaults (98eed6d), without the lr and decay rules that follow the model's size (sizes)
NANOCHAT = dict(
    shape_rule="nanochat",
    nanochat_size_rules=True,
    head_dim=128,
    aspect_ratio=64,
    seq_len=2048,
    tokenizer="bpe:32768",
    init="nanochat",
    optimizer="muon",
    muon_adjust_lr="original",
    lr=0.02,
    muon_momentum_warmup=300,
    wd_schedule="linear",
    beta1=0.8,
    beta2=0.95,
    adam_eps=1e-10,
    grad_clip=0.0,  # AdamW (embedding, lm_head); no clipping
    schedule="linear",
    warmup_steps=0,
    warmdown_frac=0.5,
    min_lr_frac=0.0,  # constant, then the last half to 0
    batch_size=32,
    total_batch_tokens=524_288,
    max_steps=500,
    eval_every=100,
    eval_batches=320,  # 40 x 524,288 val tokens
    dtype="bfloat16",
    compile=True,
)


def base(profile) -> dict:
    if profile.name == "paper":
        return {**profile.train_keys(), "nanohead_dim": 3, **NANOCHAT, "corpus": FINEWEB_EDU}
    keys = {**profile.train_keys(), "nanohead_dim": 3, "lr": 3e-3 if profile.name in ("smoke", "cpu") else 2e-3}
    if profile.name == "gpu":  # hours of training: a corpus it does not loop (the embedded one would be ~96 epochs)
        keys["corpus"] = FINEWEB_EDU
    return keys


def sizes(config: dict) -> dict:
    """With nanochat_size_rules (the paper profile), base_train 98eed6d's size rules: AdamW lrs embedding 0.3 and
    unembedding 0.004 x (n_embd / 768)^-0.5; Muon's weight decay 0.2 x (12 / n_layer)^2."""
    return nanochat_sizes(config, embedding_lr=0.3, lm_head_lr=0.004, weight_decay=0.2)


def resolve(config: dict) -> dict:
    return sizes(architecture(config, nanohead_proportion=0.0))


def variant(config: dict) -> str:
    return f"p{round(config['nanohead_proportion'] * 100):02d}"


def trial_name(config: dict) -> str:
    """nanohead_p20_d4 as in the note: proportion in percent, then the depth."""
    return (
        f"nanohead_{variant(config)}_d{config['n_layer']}"
        + (f"_nd{config['nanohead_dim']}" if config.get("nanohead_dim", 3) != 3 else "")
        + seed_suffix(config)
    )


def search_space(profile, tune=None) -> dict:
    """nanohead_search: proportion, nano head dim, depth and learning rate (width fixed by the profile's baseline).
    The catalog calls axes(profile) alone: Tune's domains are imported here, on first use (starts nothing)."""
    if tune is None:
        from ray import tune
    if profile.name == "paper":  # around nanochat's depth here (7) and its Muon lr (0.02)
        return {
            "nanohead_proportion": tune.uniform(0.0, 0.8),
            "nanohead_dim": tune.choice([2, 3, 4, 5]),
            "n_layer": tune.randint(3, 12),
            "lr": tune.loguniform(5e-3, 8e-2),
        }
    return {
        "nanohead_proportion": tune.uniform(0.0, 0.8),
        "nanohead_dim": tune.choice([2, 3, 4, 5]),
        "n_layer": tune.randint(2, 7 if profile.name != "smoke" else 4),
        "lr": tune.loguniform(1e-3, 1e-2),
    }


def search_resolve(config: dict) -> dict:
    """The width comes from the baseline at the profile's budget; depth is searched, so params vary with it."""
    n_layer = config["n_layer"]
    resolved = architecture({**config}, nanohead_proportion=0.0)
    resolved["n_layer"] = n_layer
    return sizes(resolved)


def search_trial_name(config: dict, index: int) -> str:
    return f"nanohead_search_{index:04d}_{variant(config)}_nd{config['nanohead_dim']}_d{config['n_layer']}"


def _split_text(g) -> str:
    from trainables.model import nanohead_split

    s = nanohead_split(g)
    nano = f"{s.n_nano} x {s.nano_dim} + " if s.n_nano else ""
    return f"p={g.nanohead_proportion:g}: {nano}{s.n_normal} x {s.normal_dim} (share {s.nano_fraction:.4f})"


def note_vs_run(trials: list[dict], workers: int) -> tuple[FidelityRow, ...]:
    """Notes 000/001 (nanochat's scripts/base_train.py at 98eed6d, --num-iterations=500, ~50M) beside the plan."""
    t = fidelity.first(trials)
    g, tc = t["gpt"], t["train"]
    muon = tc.optimizer == "muon" and tc.muon_adjust_lr == "original"  # the lr is a searched axis in nanohead_search
    depths = fidelity.values(trials, lambda u: "d" + str(u["gpt"].n_layer))
    splits = list(dict.fromkeys(_split_text(u["gpt"]) for u in trials))
    split_text = "; ".join(splits) if len(splits) <= 6 else f"{len(splits)} splits, e.g. {splits[0]}; {splits[-1]}"
    eval_tokens = tc.eval_batches * tc.batch_size * g.seq_len
    return (
        FidelityRow(
            "model size",
            "nanochat base_train: the depth whose model is nearest ~50M (the note's script "
            "estimates it; its run names leave it out: dXX); width = depth x 64, rounded up to 128-wide heads",
            f"{depths}, {g.n_embd} wide, {g.n_head} heads of {g.n_embd // g.n_head}: {fidelity.params(g)}"
            + (f" at d{g.n_layer}" if " / " in depths else ""),
            "the note's depth is not recorded: nanochat's rule at a 50M budget, counted without value "
            "embeddings (with them the note's estimator would pick d5)",
        ),
        FidelityRow(
            "architecture",
            "nanochat 98eed6d's GPT: RoPE, QK norm, relu^2, untied, logit softcap 15; also "
            "value embeddings on alternate layers, per-layer residual and x0 scalars, sliding windows (SSSL)",
            fidelity.model(g) + "; no value embeddings, residual scalars or sliding windows",
            "nanochat's January 2026 additions are not in this project's model (nanochat's October 2025 one)",
        ),
        FidelityRow(
            "nano heads",
            "heads of dim 3 without RoPE (QK norm kept), ~p x width of the query width; normal "
            "heads even-width. The public fork takes the nano width in steps of 6 and cuts the normal width "
            "into heads of 2 (p=0.2: 34 nano + 205 normal heads)",
            split_text,
            "the normal heads keep their count and shrink, the nano heads round to whole heads; both fit the "
            "note's text; each trial records the share as built (nanohead_share_achieved, the report's axis)",
        ),
        FidelityRow(
            "optimizer",
            "nanochat MuonAdamW: Muon lr 0.02 x sqrt(max(1, rows/cols)) on the blocks' matrices "
            "(Polar Express, NorMuon variance reduction, cautious weight decay 0.2 x (12/depth)^2 falling "
            "linearly to 0; momentum 0.85 to 0.95 over 300 steps); AdamW embedding 0.3, lm_head 0.004, both "
            "x (width/768)^-0.5, betas (0.8, 0.95), eps 1e-10, no decay; no clipping",
            fidelity.optimizer(t),
            "torch.optim.Muon orthogonalises by Newton-Schulz, without NorMuon's normalisation or the cautious "
            "decay; one q/k/v matrix holds normal and nano heads (the fork has separate ones), so Muon "
            "orthogonalises them together"
            if muon
            else "not nanochat's Muon + AdamW",
        ),
        FidelityRow(
            "schedule",
            "no warmup; constant, then the last 50% linearly to 0",
            fidelity.schedule(t),
            ""
            if (tc.warmup_steps, tc.schedule, tc.warmdown_frac, tc.min_lr_frac) == (0, "linear", 0.5, 0.0)
            else "not base_train's schedule",
        ),
        FidelityRow(
            "batch",
            "device_batch_size 32 x 2048, 524,288 tokens per step (gradient accumulation over the GPUs it has)",
            fidelity.batch(t, workers),
            "" if t["per_step"] == 524_288 else "not base_train's batch",
        ),
        FidelityRow(
            "steps",
            "--num-iterations=500",
            fidelity.steps(t),
            "" if t["tokens"] == 500 * t["per_step"] else "not the notes' 500 steps",
        ),
        FidelityRow(
            "precision",
            "bf16 autocast, torch.compile; the embedding table stored in bf16 on a GPU",
            fidelity.precision(tc),
            "fp32 weights under bf16 autocast" if tc.dtype == "bfloat16" else "no bf16",
        ),
        FidelityRow(
            "tokenizer",
            "nanochat's tok_train: rustbpe, 32,768 tokens (9 special), on the first 2B characters "
            "of the shards, documents cut at 10,000 characters",
            f"{tc.tokenizer} ({g.vocab_size:,} tokens, one special: <|bos|>), rustbpe on this run's whole train "
            f"split, nanochat's split pattern",
            "trained on this run's sample, as nanochat trains on its own data"
            if tc.tokenizer.startswith("bpe:")
            else "not a rustbpe tokenizer trained on the data",
        ),
        FidelityRow(
            "data",
            "karpathy/fineweb-edu-100b-shuffle, streamed shard by shard; val = the last shard",
            fidelity.data(tc),
            "its first 1,000,000 documents, fetched once (500 x 524,288 tokens fit under max_epochs); val by "
            "document hash, not the last shard"
            if tc.corpus == FINEWEB_EDU
            else "not FineWeb-edu",
        ),
        FidelityRow(
            "batches",
            "BOS-aligned best-fit packing: every row starts at a document's BOS",
            fidelity.loader(t, trials),
            "this project's loader: windows cut from the token stream, so rows start mid-document",
        ),
        FidelityRow(
            "eval",
            "val bpb over 40 x 524,288 tokens every 100 steps (the notes' --eval-every=100) and at the "
            "end; the CORE metric every 2,000 steps and at the end; samples",
            fidelity.evaluation(t),
            "no CORE metric or samples: the notes report val bpb only"
            + ("" if (tc.eval_every, eval_tokens) == (100, 40 * 524_288) else "; not the notes' eval"),
        ),
        FidelityRow(
            "metric",
            "final val bpb against the proportion, a point per run",
            "final val_bpb against the share as built; 95% intervals over seeds, Welch tests against p00",
            "" if len(fidelity.seeds(trials)) == 1 else "seeds: one run per arm cannot tell a small effect from noise",
        ),
        FidelityRow(
            "arms",
            "p = 0, 0.2, 0.4, 0.6, 0.8; nano dim 3; one run each",
            f"p = {fidelity.values(trials, lambda u: format(u['gpt'].nanohead_proportion, 'g'))}; nano dim "
            f"{fidelity.values(trials, lambda u: u['gpt'].nanohead_dim)}; seeds "
            f"{', '.join(map(str, fidelity.seeds(trials)))}",
        ),
    )


def search_note_vs_run(trials: list[dict], workers: int) -> tuple[FidelityRow, ...]:
    """nanohead_search: the note's training beside each drawn trial, and the search the note did not run."""
    layers = sorted({t["gpt"].n_layer for t in trials})
    lrs = sorted(t["train"].lr for t in trials)
    search = FidelityRow(
        "search",
        "none: the grid of 5 proportions at one depth (its 'future experiments': nano dims 2, 4, 5; other scales)",
        f"Optuna (TPE, or NSGA-II with objective=multi) over {', '.join(SEARCH_AXES)}, ASHA early stopping; "
        f"{len(trials)} checked draws: depth {layers[0]}-{layers[-1]}, nano dim "
        f"{', '.join(map(str, sorted({t['gpt'].nanohead_dim for t in trials})))}, lr {lrs[0]:.3g}-{lrs[-1]:.3g}",
        "this project's extension of the note's experiment",
    )
    return (search, *(r for r in note_vs_run(trials, workers) if r.aspect not in ("arms", "metric")))


GRID = StudySpec(
    name="nanohead_grid",
    family="nanohead",
    note="000_f68f42f0f06710c9.txt, 001_cb10fb95bfa0b62b.txt",
    hypothesis="Mixing tiny heads (dim 2-3, no RoPE) into a GPT improves loss at equal parameters; "
    "moderate proportions (0.2-0.4) help, 0.8 hurts.",
    base=base,
    axes=lambda profile: dict(AXES),
    resolve=resolve,
    variant=variant,
    trial_name=trial_name,
    baseline="p00",
    views=("nanohead",),
    fidelity=note_vs_run,
)

SEARCH = StudySpec(
    name="nanohead_search",
    family="nanohead_search",
    note="000_f68f42f0f06710c9.txt",
    hypothesis="Where in (proportion, nano head dim, depth, learning rate) is the best model, and what does "
    "the val_bpb-vs-parameters Pareto front look like (--set objective=multi)?",
    base=lambda profile: {**base(profile), "objective": "single"},
    axes=search_space,
    resolve=search_resolve,
    variant=variant,
    trial_name=trial_name,
    searcher="optuna",
    scheduler="asha",
    num_samples={"smoke": 4, "cpu": 12, "gpu": 40, "paper": 100},
    views=("optuna",),
    study_keys=("objective",),
    fidelity=search_note_vs_run,
)
