"""
Synthetic study directories in the output-format contract, with known answers.

Written by hand here rather than by the study runner: the reports tests check the
reports against data whose truth we chose, not against the runner's own output.
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

EVIL = "<script>alert(1)</script>"


def write_study(
    root, name, rows, family="nanohead", baseline=None, curves=True, samples=None, meta_extra=None, envs=True
):
    """rows: dicts with at least trial, variant, seed, status. Writes study.json, trials.parquet/csv, trials/*/."""
    d = Path(root) / name.replace("/", "_")
    (d / "trials").mkdir(parents=True, exist_ok=True)
    meta = {
        "study": name,
        "family": family,
        "profile": "smoke",
        "args": {"study": name, "profile": "smoke"},
        "versions": {"pandas": pd.__version__},
        "git_commit": "0123abc",
        "started": "2026-01-01T00:00:00",
        "ended": "2026-01-01T01:00:00",
        "metric": "val_bpb",
        "mode": "min",
        "environment": {"python": "3.11", "platform": "linux", "device": "cpu", "cpu_count": 2},
    }
    if baseline:
        meta["baseline"] = {"variant": baseline}
    meta.update(meta_extra or {})
    (d / "study.json").write_text(json.dumps(meta))
    df = pd.DataFrame(rows)
    df["study"] = name
    df.to_parquet(d / "trials.parquet")
    df.to_csv(d / "trials.csv", index=False)
    rng = np.random.default_rng(0)
    for r in rows:
        tdir = d / "trials" / r["trial"]
        tdir.mkdir(parents=True, exist_ok=True)
        (tdir / "config.json").write_text(
            json.dumps({k: v for k, v in r.items() if k not in ("status", "error")}, default=float)
        )
        if envs:
            (tdir / "env.json").write_text(json.dumps({"python": "3.11", "torch": "2.13.0"}))
        if curves and r["status"] != "failed":
            final = r.get("val_bpb", 1.5)
            final = 1.5 if final is None or not math.isfinite(final) else final
            with open(tdir / "metrics.jsonl", "w") as f:
                for step in range(1, 11):
                    tokens = step * 1000
                    f.write(json.dumps({"step": step, "tokens": tokens, "train_loss": 2 * final + 3 / step}) + "\n")
                    if step % 2 == 0:
                        f.write(
                            json.dumps(
                                {
                                    "step": step,
                                    "tokens": tokens,
                                    "val_loss": 2 * final + 2 / step,
                                    "val_bpb": final + 1 / step + rng.normal(0, 1e-3),
                                }
                            )
                            + "\n"
                        )
        if samples and r["variant"] in samples:
            (tdir / "samples.json").write_text(json.dumps({"prompt": "Once upon", "samples": samples[r["variant"]]}))
    return d


def trial_row(trial, variant, seed, val_bpb, status="done", error=None, **extra):
    params = extra.pop("params_total", 1e6)
    row = dict(
        trial=trial,
        variant=variant,
        seed=seed,
        status=status,
        error=error,
        params_total=params,
        params_embedding=0.2 * params,
        params_lm_head=0.2 * params,
        params_non_embedding=0.8 * params,
        flops_per_token=6 * 0.8 * params,
        tokens_trained=20 * params,
        train_loss=2 * val_bpb if status == "done" else math.nan,
        val_loss=2 * val_bpb if status == "done" else math.nan,
        val_bpb=val_bpb if status == "done" else math.nan,
        best_val_bpb=val_bpb if status == "done" else math.nan,
        tokens_per_s=5000.0,
        mfu=0.01,
        wall_s=60.0,
    )
    row.update(extra)
    return row


def nanohead_rows(seeds=3, failed=True, evil=True):
    """Proportions 0..0.8 with 3 seeds; p40 truly better by 0.05, p80 the same as p0 (within noise)."""
    effect = {0.0: 0.0, 0.2: -0.01, 0.4: -0.05, 0.6: 0.0, 0.8: 0.0}
    rng = np.random.default_rng(42)
    rows = []
    for p, d in effect.items():
        for s in range(seeds):
            v = f"p{int(p * 100)}"
            rows.append(
                trial_row(
                    f"{v}_s{s}",
                    v,
                    s,
                    1.5 + d + rng.normal(0, 0.004),
                    nanohead_proportion=p,
                    nanohead_dim=3,
                    n_layer=4,
                    n_embd=256,
                    lr=0.02,
                    params_total=1e6 * (1 + 0.05 * p),
                )
            )
    if failed:
        rows.append(
            trial_row(
                "p20_s9",
                "p20",
                9,
                math.nan,
                status="failed",
                error="RuntimeError: CUDA out of memory\nTraceback (most recent call last):\n  File x",
                nanohead_proportion=0.2,
                nanohead_dim=3,
                n_layer=4,
                n_embd=256,
                lr=0.02,
            )
        )
        rows.append(
            trial_row(
                "p60_s9",
                "p60",
                9,
                math.nan,
                status="stopped",
                error=None,
                nanohead_proportion=0.6,
                nanohead_dim=3,
                n_layer=4,
                n_embd=256,
                lr=0.02,
            )
        )
    if evil:
        rows.append(
            trial_row(
                f"evil{EVIL}",
                "p0",
                7,
                math.nan,
                status="failed",
                error=f"ValueError: bad {EVIL}",
                nanohead_proportion=0.0,
                nanohead_dim=3,
                n_layer=4,
                n_embd=256,
                lr=0.02,
            )
        )
    return rows


def softmax1_rows(seeds=3):
    """softmax1 4% better in perplexity (loss - ln(1/0.96)): below 1 but not past the 5% line."""
    rng = np.random.default_rng(1)
    rows = []
    for v, shift in (("softmax", 0.0), ("softmax1", math.log(0.96))):
        for s in range(seeds):
            loss = 3.0 + shift + rng.normal(0, 0.002)
            rows.append(
                trial_row(
                    f"{v}_s{s}",
                    v,
                    s,
                    loss / math.log(2) / 4,
                    softmax1=(v == "softmax1"),
                    val_ppl=math.exp(loss),
                    n_layer=6,
                    n_embd=768,
                )
            )
            rows[-1]["val_loss"] = loss
    return rows


def paired_rows(seeds=4, seed_sd=0.02, pair_sd=3e-4, effects=None):
    """Arms that share each data_seed's batches, as softmax1_ab smoke measured them: the data seed moves every arm
    alike (sd seed_sd, there 0.0205) and each trial adds a little of its own (differences at one seed: sd 0.00027).
    "small" is truly 0.002 better than "base": too little for the seed-to-seed noise, plain for the pairs."""
    effects = effects or {"base": 0.0, "small": -0.002, "same": 0.0}
    rng = np.random.default_rng(17)
    shared = rng.normal(0, seed_sd, seeds)
    return [
        trial_row(f"{v}_s{s}", v, s, 1.5 + d + shared[s] + rng.normal(0, pair_sd), init_seed=s, data_seed=s)
        for v, d in effects.items()
        for s in range(seeds)
    ]


def toeplitz_rows(seeds=2):
    rows = []
    for mean in (True, False):
        for proj in (True, False):
            v = f"{'mean' if mean else 'nomean'}_{'proj' if proj else 'noproj'}"
            for s in range(seeds):
                rows.append(
                    trial_row(
                        f"{v}_s{s}",
                        v,
                        s,
                        1.4 + 0.01 * s + (0 if mean else 0.02),
                        mixer="toeplitz",
                        toep_mean=mean,
                        toep_proj=proj,
                        samples_per_s=100.0 + 10 * proj,
                        gen_tokens_per_s_parallel=400.0,
                        gen_tokens_per_s_sequential=100.0 + 50 * proj,
                        gen_speedup=400.0 / (100.0 + 50 * proj),
                        gen_mean_time_parallel=0.3,
                        gen_mean_time_sequential=1.2,
                    )
                )
    return rows


def vocab_depth_rows():
    """Shares by construction: d4 is exactly 1/3 each; v65536_d29 is mostly embedding."""
    rows = []
    for v, vocab, layers, emb, head, blocks in (
        ("v24576_d4", 24576, 4, 12.6e6, 12.6e6, 12.6e6),
        ("v65536_d29", 65536, 29, 12.6e6, 12.8e6, 12.6e6),
        ("v32768_d7", 32768, 7, 6e6, 6e6, 24e6),
    ):
        for s in range(2):
            r = trial_row(
                f"{v}_s{s}",
                v,
                s,
                1.3 + 0.01 * s,
                vocab_size=vocab,
                n_layer=layers,
                n_embd=512,
                params_total=emb + head + blocks,
            )
            r.update(params_embedding=emb, params_lm_head=head, params_non_embedding=head + blocks)
            rows.append(r)
    return rows


SCALING_TRUTH = {"E": 1.2, "A": 80.0, "alpha": 0.3}


def scaling_rows(seeds=2, noise=0.002):
    rng = np.random.default_rng(3)
    rows = []
    for budget in (1e6, 2e6, 4e6, 8e6, 16e6):
        for s in range(seeds):
            t = SCALING_TRUTH
            bpb = t["E"] + t["A"] * budget ** -t["alpha"] + rng.normal(0, noise)
            rows.append(
                trial_row(
                    f"b{int(budget / 1e6)}M_s{s}", "v8192", s, bpb, budget=budget, params_total=budget, vocab_size=8192
                )
            )
    return rows


def write_optuna(d, name, n_trials=12, directions=("minimize",)):
    """A real Optuna SQLite storage with a known objective: (x - 0.3)^2, y barely matters."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{d / 'optuna.db'}",
        directions=list(directions),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )

    def objective(trial):
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_int("y", 1, 4)
        first = (x - 0.3) ** 2 + 1e-3 * y
        return first if len(directions) == 1 else (first, float(y))

    study.optimize(objective, n_trials=n_trials)
    return study


def big_rows(n=1000, variants=20):
    rng = np.random.default_rng(5)
    rows = []
    for i in range(n):
        v = f"v{i % variants}"
        rows.append(
            trial_row(
                f"t{i:04d}",
                v,
                i // variants,
                1.5 + 0.001 * (i % variants) + rng.normal(0, 0.01),
                params_total=1e6 * (1 + i % variants),
                n_layer=4,
                n_embd=256,
                lr=0.01,
                probe_kurtosis=3.0 + rng.normal(),
                probe_max_inf_norm=10.0 + rng.normal(),
            )
        )
    return rows
