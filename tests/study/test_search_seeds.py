"""--seeds N in an Optuna search: one trial trains its config with N seeds in lockstep and reports their mean at every
eval (so ASHA and the sampler judge the config, not one draw of noise); --set confirm_top=K confirm_seeds=M re-runs
the K best configs with M seeds after the search."""

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats
from study_cli import run_cli

from trainables.storage import read_jsonl

TINY = dict(
    n_layer=2,
    n_embd=64,
    n_head=4,
    seq_len=64,
    batch_size=4,
    max_steps=6,
    eval_every=3,
    eval_batches=2,
    tokenizer="bpe:512",
    warmup_steps=2,
    probes=False,
)


def _lines(path: Path) -> list[dict]:
    return read_jsonl(path)[0]


def test_the_reported_value_is_the_mean_of_the_seeds_files_and_a_resume_continues(token_cache, tmp_path):
    from trainables.train import train, train_seeds

    reported, saved = [], {}

    def report(metrics, checkpoint_dir):
        reported.append(metrics)
        if checkpoint_dir:
            saved[metrics["step"]] = shutil.copytree(checkpoint_dir, tmp_path / f"ckpt_{metrics['step']}")
            shutil.rmtree(checkpoint_dir)

    out = tmp_path / "trial"
    final = train_seeds(TINY, 2, report=report, out_dir=str(out), log=lambda m: None)
    seed0, seed1 = _lines(out / "seed0" / "metrics.jsonl"), _lines(out / "seed1" / "metrics.jsonl")
    assert [m["step"] for m in reported] == [m["step"] for m in seed0] == [m["step"] for m in seed1] == [3, 6]
    for mean, a, b in zip(reported, seed0, seed1):
        for key in ("val_bpb", "val_loss", "train_loss"):
            assert mean[key] == pytest.approx((a[key] + b[key]) / 2, rel=1e-12)
            assert (mean[f"{key}_seed0"], mean[f"{key}_seed1"]) == (a[key], b[key])
        assert mean["seeds"] == 2 and mean["params_total"] == a["params_total"]
    assert _lines(out / "metrics.jsonl") == [json.loads(json.dumps(m)) for m in reported]
    assert final == reported[-1]
    # lockstep changes no run: seed 1 alone trains the same curve (each run keeps its own RNG state between windows)
    alone = train({**TINY, "seed": 1}, log=lambda m: None)
    assert alone["val_bpb"] == pytest.approx(seed1[-1]["val_bpb"], rel=1e-6)
    # a trial killed after its first eval continues both runs from the checkpoint that holds them
    resumed = []
    again = train_seeds(
        TINY,
        2,
        report=lambda m, d: resumed.append(m) or (d and shutil.rmtree(d)),
        restore=str(saved[3]),
        out_dir=str(out),
        log=lambda m: None,
    )
    assert [m["step"] for m in resumed] == [6]
    assert again["val_bpb"] == pytest.approx(final["val_bpb"], rel=1e-6)
    assert [m["step"] for m in _lines(out / "metrics.jsonl")] == [3, 6]


@pytest.mark.parametrize(
    "args, says",
    [
        (["nanohead_search", "--set", "confirm_top=-1"], "--set confirm_top=-1: must be an integer >= 0"),
        (
            ["nanohead_search", "--set", "confirm_top=1", "--set", "confirm_seeds=0"],
            "--set confirm_seeds=0: must be an integer >= 1",
        ),
        (["nanohead_search", "--set", "confirm_seeds=3"], "--set confirm_seeds=3: takes effect only with"),
        (["nanohead_grid", "--set", "confirm_top=1"], "--set confirm_top: nanohead_grid is a grid study"),
        (["nanohead_search", "--seeds", "2", "--set", "seed=3"], "--set seed=3: with --seeds 2"),
    ],
    ids=["top_negative", "seeds_zero", "seeds_without_top", "grid_study", "seed_with_seeds"],
)
def test_bad_values_are_one_line_exit_2_and_write_nothing(token_cache, tmp_path, args, says):
    out = tmp_path / "results"
    r = run_cli(token_cache, *args, "--profile", "smoke", "--output", out)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"error: {says}") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


@pytest.mark.ray
def test_a_search_with_two_seeds_reports_means_and_confirms_its_best_config(token_cache, tmp_path):
    """nanohead_search on the smoke profile with --seeds 2 and a confirmation of its best config with 2 new seeds:
    every trial's value (in trials.parquet and as Optuna's trial value) is the mean of its seeds' own metrics.jsonl,
    the best search trial is the one confirmed, with seeds 2 and 3, and the report recommends from it."""
    import optuna

    out = tmp_path / "results"
    r = run_cli(
        token_cache,
        *("nanohead_search", "--profile", "smoke", "--num-samples", "2", "--seeds", "2", "--wandb", "disabled"),
        *("--set", "confirm_top=1", "--set", "confirm_seeds=2", "--output", out),
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    study = out / "nanohead_search"
    df = pd.read_parquet(study / "trials.parquet").set_index("trial")
    search = df[df["confirm_of"].isna()]
    assert len(search) == 2 and set(search["seeds"]) == {2}

    def seed_means(trial: str, seeds: list[int]) -> float:
        """The mean of the seeds' val_bpb at the trial's last reported step, from their own files."""
        step = _lines(study / "trials" / trial / "metrics.jsonl")[-1]["step"]
        values = [
            next(
                m["val_bpb"]
                for m in _lines(study / "trials" / trial / f"seed{s}" / "metrics.jsonl")
                if m["step"] == step
            )
            for s in seeds
        ]
        return sum(values) / len(values)

    for trial, row in search.iterrows():
        assert row["val_bpb"] == pytest.approx(seed_means(trial, [0, 1]), rel=1e-12)
    ostudy = optuna.load_study(study_name="nanohead_search", storage=f"sqlite:///{study / 'optuna.db'}")
    values = {f"nanohead_search_{t.number:04d}": t.value for t in ostudy.trials}
    assert values == pytest.approx(search["val_bpb"].to_dict(), rel=1e-12)

    finished = search[search["status"] == "done"]  # ASHA may stop the worse trial at its first rung
    best = finished["val_bpb"].idxmin()
    confirm = df[df["confirm_of"].notna()]
    assert list(confirm.index) == [f"{best}_confirm"] and confirm["confirm_of"].iloc[0] == best
    assert confirm["val_bpb"].iloc[0] == pytest.approx(seed_means(f"{best}_confirm", [2, 3]), rel=1e-12)
    for key in ("nanohead_proportion", "nanohead_dim", "n_layer", "lr"):
        assert confirm[key].iloc[0] == search.loc[best, key]

    o = json.loads((study / "results.json").read_text())["optuna"]
    a, b = confirm["val_bpb_seed2"].iloc[0], confirm["val_bpb_seed3"].iloc[0]
    half = stats.t.ppf(0.975, 1) * abs(a - b) / math.sqrt(2) / math.sqrt(2)  # t(1) x sd / sqrt(n), sd = |a-b|/sqrt 2
    row = o["confirmation"][0]
    assert (row["n"], row["mean"]) == (2, pytest.approx((a + b) / 2, rel=1e-12))
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx((a + b) / 2 - half), pytest.approx((a + b) / 2 + half))
    assert [leader["trial"] for leader in o["leaders"]] == list(finished["val_bpb"].sort_values().index)
    assert f"the best config is {best}" in (study / "report.html").read_text()
    registered = json.loads((study / "study.json").read_text())["plan"]["search"]
    assert registered == dict(seeds_per_trial=2, confirm_top=1, confirm_seeds=2)
