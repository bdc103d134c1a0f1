"""Multi-head Toeplitz mixer (note 003, Experiment 010): 4 variants, weighted mean x projections.

Per variant: train and eval loss (final and best eval), runtime, samples/s, and generation speed with heads
processed in parallel vs one at a time, cached vs uncached (tokens/s, mean time, speedups).
"""

from . import fidelity
from .common import SIMPLE_STORIES, seed_suffix
from .fidelity import FidelityRow
from .spec import StudySpec

AXES = {"toep_mean": [True, False], "toep_proj": [True, False]}
# The note's mixer, the same in every arm (its model code): linear filters w = raw, raw ~ N(0, 0.2^2) at init,
# projections nn.Linear with biases. So toep_mean only divides, and each of these keys, set, changes one thing.
MIXER = dict(toep_filter="linear", toep_init="normal", toep_proj_bias=True)
# The note: width 512, seq 512, 10 blocks, 4 heads, MLP 512, dropout 0.1, AdamW lr 5e-4, 500 warmup,
# batch 16, 20k steps; generation benchmark 128 tokens, 10 runs, batch 4. Its HF Trainer's defaults: AdamW
# betas (0.9, 0.999), no weight decay, clip 1.0, lr linear from the end of warmup to 0 (warmdown_frac in base).
PAPER = dict(
    mixer="toeplitz",
    n_embd=512,
    seq_len=512,
    n_layer=10,
    n_head=4,
    mlp_ratio=1.0,
    dropout=0.1,
    lr=5e-4,
    embedding_lr=5e-4,
    lm_head_lr=5e-4,
    warmup_steps=500,
    batch_size=16,
    max_steps=20_000,
    eval_every=2000,
    beta1=0.9,
    beta2=0.999,
    weight_decay=0.0,
    grad_clip=1.0,
    schedule="linear",
    min_lr_frac=0.0,
    gen_benchmark_tokens=128,
    gen_benchmark_runs=10,
    **MIXER,
)


def base(profile) -> dict:
    keys = {**profile.train_keys(), **PAPER, "budget": None}
    if profile.name == "smoke":
        keys.update(
            n_embd=64,
            seq_len=64,
            n_layer=2,
            batch_size=8,
            max_steps=profile.max_steps,
            eval_every=profile.eval_every,
            warmup_steps=5,
            lr=3e-3,
            embedding_lr=None,
            lm_head_lr=None,
            gen_benchmark_tokens=8,
            gen_benchmark_runs=1,
        )
    elif profile.name == "cpu":
        keys.update(
            n_embd=128,
            seq_len=128,
            n_layer=4,
            batch_size=16,
            max_steps=profile.max_steps,
            eval_every=profile.eval_every,
            warmup_steps=30,
            lr=3e-3,
            embedding_lr=None,
            lm_head_lr=None,
            gen_benchmark_tokens=32,
            gen_benchmark_runs=3,
        )
    elif profile.name == "gpu":
        keys.update(max_steps=5000, eval_every=500, tokenizer=profile.tokenizer, corpus=SIMPLE_STORIES)
    else:
        keys.update(corpus=SIMPLE_STORIES)
    keys["warmdown_frac"] = (
        1 - keys["warmup_steps"] / keys["max_steps"]
    )  # HF's linear schedule: decay all the way after warmup
    return keys


def resolve(config: dict) -> dict:
    return config


def variant(config: dict) -> str:
    name = f"{'mean' if config['toep_mean'] else 'nomean'}_{'proj' if config['toep_proj'] else 'noproj'}"
    # a mixer setting other than the note's is named, so arms that differ in it never share a name (or a report row)
    extra = [config[k] for k in ("toep_filter", "toep_init") if config.get(k, MIXER[k]) != MIXER[k]]
    if config["toep_proj"] and not config.get("toep_proj_bias", MIXER["toep_proj_bias"]):
        extra.append("nobias")
    return "_".join([name, *extra])


def trial_name(config: dict) -> str:
    return f"toeplitz_{variant(config)}" + seed_suffix(config)


def note_vs_run(trials: list[dict], workers: int) -> tuple[FidelityRow, ...]:
    """Note 003 (Experiment 010: HF Trainer on SimpleStories, 4 mixer variants, a generation benchmark) beside the plan."""
    t = fidelity.first(trials)
    g, tc = t["gpt"], t["train"]
    note_model = (g.n_embd, g.seq_len, g.n_layer, g.n_head, g.mlp_hidden, g.dropout) == (512, 512, 10, 4, 512, 0.1)
    mixers = fidelity.values(
        trials,
        lambda u: (
            f"filters {u['gpt'].toep_filter}, init {u['gpt'].toep_init}, projection bias {u['gpt'].toep_proj_bias}"
        ),
    )
    note_mixer = all(
        (u["gpt"].toep_filter, u["gpt"].toep_init, u["gpt"].toep_proj_bias)
        == (MIXER["toep_filter"], MIXER["toep_init"], MIXER["toep_proj_bias"])
        for u in trials
    )
    adamw = (
        tc.optimizer == "adamw"
        and set(fidelity.role_lrs(t).values()) == {5e-4}
        and (tc.beta1, tc.beta2, tc.adam_eps, tc.weight_decay, tc.grad_clip) == (0.9, 0.999, 1e-8, 0.0, 1.0)
    )
    hf_linear = tc.schedule == "linear" and tc.min_lr_frac == 0.0 and tc.warmup_steps == 500
    bench = (tc.gen_benchmark_tokens, tc.gen_benchmark_runs, tc.gen_benchmark_batch) == (128, 10, 4)
    eval_tokens = tc.eval_batches * tc.batch_size * g.seq_len
    return (
        FidelityRow(
            "model",
            "vocab ~50k, width 512, sequence 512, 10 blocks, 4 heads, MLP 512, dropout 0.1; the note "
            "shows the mixer only",
            fidelity.model(g),
            "the rest of each block is this project's (pre-norm RMSNorm, relu^2 MLP, untied embeddings, logit "
            "softcap): the note does not show its own" + ("" if note_model else "; not the note's sizes"),
        ),
        FidelityRow(
            "mixer",
            "MultiHeadMixer: a filter over lags per head, a causal Toeplitz sum; do_toep_mean divides "
            "by cumsum(weight); do_toep_proj adds inp_proj/out_proj = nn.Linear (with bias)",
            f"{mixers}; arms {fidelity.values(trials, lambda u: variant({**u['config'], **u['gpt'].to_dict()}))}",
            "" if note_mixer else "an arm's mixer differs from the note's (its name says how)",
        ),
        FidelityRow(
            "tokenizer",
            "'~50k (SimpleStories tokenizer)'",
            f"{tc.tokenizer}: {g.vocab_size:,} tokens"
            + (", trained with rustbpe on this run's stories" if tc.tokenizer.startswith("bpe:") else ""),
            "the note names no tokenizer file: a BPE trained on the same stories (--set tokenizer=gpt2 gives 50,257)"
            if g.vocab_size != 50_257
            else "gpt2's tokens stand in for the unnamed ~50k tokenizer",
        ),
        FidelityRow(
            "optimizer",
            "HF Trainer's AdamW (torch): lr 5e-4, betas (0.9, 0.999), eps 1e-8, no weight decay; clip 1.0",
            fidelity.optimizer(t),
            "" if adamw else "not the note's AdamW",
        ),
        FidelityRow(
            "schedule",
            "HF linear schedule: warmup 500 steps (lr x step/500), then linearly to 0 at max_steps",
            fidelity.schedule(t),
            "warmup one step ahead: (step+1)/500 here, HF's step/500 trains step 0 at lr 0"
            if hf_linear
            else "not the note's schedule",
        ),
        FidelityRow(
            "batch",
            "per_device_train_batch_size 16; a row = one story, padded or cut to 512 tokens",
            fidelity.batch(t, workers),
            "stories packed into windows (each after a BOS token): no padding, "
            "rows cross story boundaries, in a shuffled window order"
            + ("" if (tc.batch_size, g.seq_len) == (16, 512) else "; not the note's 16 x 512"),
        ),
        FidelityRow(
            "steps",
            "max_steps 20,000",
            fidelity.steps(t),
            "" if t["tokens"] == 20_000 * t["per_step"] else "not the note's 20,000 steps",
        ),
        FidelityRow(
            "precision",
            "fp16 mixed precision (HF Trainer, with loss scaling)",
            fidelity.precision(tc),
            "bf16 needs no loss scaling (it has fp32's range); this project has no fp16 path",
        ),
        FidelityRow(
            "data",
            "SimpleStories (2,115,696 train stories), dataprep.py --max_length 512; eval on its test split",
            fidelity.data(tc),
            "1,000,000 of the train stories, fetched once; val: 5% of them by hash, not the test split"
            if tc.corpus == SIMPLE_STORIES
            else "not SimpleStories",
        ),
        FidelityRow(
            "eval",
            "every 2,000 steps over the whole test split; the best checkpoint's eval loss "
            "(load_best_model_at_end); train loss, runtime, samples/s",
            fidelity.evaluation(t) + "; reported: final and best val loss, train loss, wall time, samples/s",
            f"val over the first {eval_tokens:,} tokens of the split, not all of it"
            + ("" if tc.eval_every == 2000 else "; not every 2,000 steps"),
        ),
        FidelityRow(
            "generation",
            "128 tokens, 10 runs, batch 4, after warm-up; heads in parallel vs one at a time, cached vs uncached",
            f"{tc.gen_benchmark_tokens} tokens, {tc.gen_benchmark_runs} runs, batch {tc.gen_benchmark_batch}, "
            f"2 warm-up runs, greedy from a one-token prompt; parallel vs sequential, cached vs uncached; in the "
            f"training's autocast dtype, CUDA synchronised around the timer",
            "the note's prompt is not given: one val token per row here"
            + ("" if bench else "; not the note's 128 x 10 x 4"),
        ),
        FidelityRow(
            "seeds",
            "not fixed ('results may vary slightly between runs')",
            f"seeds {', '.join(map(str, fidelity.seeds(trials)))}",
            "fixed seeds repeat a run; --seeds N gives intervals",
        ),
    )


STUDY = StudySpec(
    name="toeplitz_flags",
    family="toeplitz",
    note="003_dda6ec3c2e766f7d.txt",
    hypothesis="How do the weighted mean and the projections of a multi-head Toeplitz mixer trade quality "
    "for speed, and how much faster is generation with heads in parallel?",
    base=base,
    axes=lambda profile: dict(AXES),
    resolve=resolve,
    variant=variant,
    trial_name=trial_name,
    baseline="nomean_noproj",
    views=("toeplitz",),
    fidelity=note_vs_run,
)
