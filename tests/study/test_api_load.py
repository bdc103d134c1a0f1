"""study.api.load_study: a study folder (finished or running) or its URI -> StudyResult; its summary checked against
scipy and by hand, never against the reports' own output."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reports"))  # the synthetic studies live there
from reports_synth import nanohead_rows, write_study  # noqa: E402

from reports.analyse import compare_to_baseline  # noqa: E402
from study.api import SUMMARY_COLUMNS, StudyResult, load_study  # noqa: E402
from study.run import UsageError  # noqa: E402


@pytest.fixture
def nanohead(tmp_path):
    """Five arms x 3 seeds (p40 truly 0.05 better), a failed and a stopped trial; a 2% threshold."""
    rows = nanohead_rows(evil=False)
    d = write_study(
        tmp_path, "nanohead_grid", rows, baseline="p0", meta_extra={"views": ["nanohead"], "threshold": 0.02}
    )
    return d, pd.DataFrame(rows)


def test_trials_and_meta_are_the_files(nanohead):
    d, _ = nanohead
    s = load_study(d)
    assert isinstance(s, StudyResult) and s.path == d and s.uri is None
    assert s.meta == json.loads((d / "study.json").read_text())
    pd.testing.assert_frame_equal(s.trials, pd.read_parquet(d / "trials.parquet"))


def test_summary_by_hand(nanohead):
    d, rows = nanohead
    summary = load_study(d).summary()
    assert list(summary.columns) == SUMMARY_COLUMNS
    done = rows[rows["status"] == "done"]
    base = done.loc[done["variant"] == "p0", "val_bpb"].to_numpy()
    assert summary["arm"].tolist() == ["p0", "p20", "p40", "p60", "p80"]
    by_arm = summary.set_index("arm")
    p_raw = {}
    for arm, r in by_arm.iterrows():
        x = done.loc[done["variant"] == arm, "val_bpb"].to_numpy()
        half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
        assert r["n"] == len(x) == 3  # the failed and stopped trials do not count
        assert (r["mean"], r["ci_low"], r["ci_high"]) == pytest.approx((x.mean(), x.mean() - half, x.mean() + half))
        if arm == "p0":
            assert r["diff"] == 0 and r["verdict"] == "baseline" and math.isnan(r["p_value"])
            continue
        # paired by seed (this table has no data_seed column: its seed set the batches), seeds 0..2 in order
        ref = stats.ttest_rel(x, base)
        ci = ref.confidence_interval(0.95)
        assert "(paired t)" in r["verdict"] and r["diff"] == pytest.approx(x.mean() - base.mean())
        assert (r["diff_ci_low"], r["diff_ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
        assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)  # raw, not Holm-adjusted
        p_raw[arm] = ref.pvalue
    # the verdict uses Holm's adjustment over the 4 arms: sorted p times 4, 3, 2, 1, never decreasing
    order = sorted(p_raw, key=p_raw.get)
    holm, running = {}, 0.0
    for rank, arm in enumerate(order):
        running = max(running, min(1.0, (4 - rank) * p_raw[arm]))
        holm[arm] = running
    assert holm["p40"] < 0.05 and by_arm.loc["p40", "verdict"].startswith("better (paired t); ")
    for arm in ("p20", "p60", "p80"):
        words = "within noise" if p_raw[arm] >= 0.05 else "within noise after Holm correction"
        assert holm[arm] >= 0.05 and by_arm.loc[arm, "verdict"].startswith(words + " (paired t); "), arm
    # the 2% threshold: p40's bpb ratio of geometric means, exp of Welch's interval on the logs, by hand
    lb, la = np.log(done.loc[done["variant"] == "p40", "val_bpb"].to_numpy()), np.log(base)
    va, vb = la.var(ddof=1) / 3, lb.var(ddof=1) / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    hi = math.exp(lb.mean() - la.mean() + stats.t.ppf(0.975, df) * math.sqrt(va + vb))
    assert (
        hi < 0.98
        and by_arm.loc["p40", "verdict"]
        == "better (paired t); meets the 2% threshold: the whole interval is below 0.98"
    )
    assert by_arm.loc["p80", "verdict"].endswith("; does not meet the 2% threshold")


def test_summary_without_a_baseline(tmp_path):
    d = write_study(tmp_path, "custom", nanohead_rows(failed=False, evil=False), family="custom")
    summary = load_study(d).summary()
    assert len(summary) == 5 and set(summary["verdict"]) == {"no baseline"} and summary["diff"].isna().all()


def _runner_trial(study_dir, mean, proj, seed, steps, planned=10):
    """A trial folder as the runner leaves it mid-study: trial_config.json, config.json (nested), metrics.jsonl."""
    config = dict(mixer="toeplitz", toep_mean=mean, toep_proj=proj, seed=seed)
    trial = study_dir / "trials" / f"toeplitz_{'mean' if mean else 'nomean'}_{'proj' if proj else 'noproj'}_s{seed}"
    trial.mkdir(parents=True)
    (trial / "trial_config.json").write_text(json.dumps(config))
    built = dict(trial=config, model=dict(config, n_layer=2), params=dict(total=1000), planned_steps=planned)
    (trial / "config.json").write_text(json.dumps(built))
    with open(trial / "metrics.jsonl", "w") as f:
        for step in range(5, steps + 1, 5):
            f.write(json.dumps(dict(step=step, tokens=100 * step, val_bpb=2.0 - 0.01 * step - 0.1 * mean)) + "\n")


def test_a_running_study_loads_from_its_trial_folders(tmp_path):
    d = tmp_path / "toeplitz_flags"
    d.mkdir()
    meta = dict(study="toeplitz_flags", family="toeplitz", views=["toeplitz"], baseline={"variant": "nomean_noproj"})
    (d / "study.json").write_text(json.dumps(meta))
    for seed in (0, 1):
        _runner_trial(d, True, True, seed, steps=10)
        _runner_trial(d, False, False, seed, steps=10)
    _runner_trial(d, True, False, 0, steps=5)  # still training
    s = load_study(d)
    t = s.trials.set_index("trial")
    assert len(t) == 5 and not (d / "trials.parquet").exists()
    # arms named by the catalog study's own variant function, as trials.parquet will name them
    assert t.loc["toeplitz_mean_proj_s0", "variant"] == "mean_proj"
    assert (
        t.loc["toeplitz_mean_noproj_s0", "status"] == "unfinished"
        and t.loc["toeplitz_mean_proj_s1", "status"] == "done"
    )
    assert t.loc["toeplitz_mean_proj_s0", "params_total"] == 1000 and t.loc["toeplitz_mean_proj_s0", "n_layer"] == 2
    assert t.loc["toeplitz_mean_proj_s0", "val_bpb"] == pytest.approx(2.0 - 0.1 - 0.1)
    summary = s.summary().set_index("arm")
    assert summary["n"].to_dict() == {"nomean_noproj": 2, "mean_proj": 2}  # done trials only
    assert summary.loc["mean_proj", "diff"] == pytest.approx(-0.1)
    assert any("rebuilt from trials" in w for w in s.warnings)


def test_the_seeds_each_trial_used_are_columns_paired_by_the_summary(tmp_path):
    """init_seed and data_seed as the trainer resolved them (config.json's train), in trials.parquet (collect) and in
    the rows of a running study: a config.json from before them, or a torn one, gives what the trainer would have
    used (the seed, or the trial config's own)."""
    from study.catalog import STUDIES
    from study.results import collect, write_trials

    d = tmp_path / "toeplitz_flags"
    d.mkdir()
    meta = dict(study="toeplitz_flags", family="toeplitz", views=["toeplitz"], baseline={"variant": "nomean_noproj"})
    (d / "study.json").write_text(json.dumps(meta))
    for seed in (0, 1, 2):
        for mean in (True, False):
            _runner_trial(d, mean, mean, seed, steps=10)
    for name, train in (("toeplitz_mean_proj_s1", dict(init_seed=1, data_seed=1)), ("toeplitz_mean_proj_s2", {})):
        built = json.loads((d / "trials" / name / "config.json").read_text())
        (d / "trials" / name / "config.json").write_text(json.dumps({**built, "train": dict(seed=1, **train)}))
    (d / "trials" / "toeplitz_nomean_noproj_s2" / "trial_config.json").write_text(
        json.dumps(dict(mixer="toeplitz", toep_mean=False, toep_proj=False, seed=2, data_seed=0))
    )
    (d / "trials" / "toeplitz_nomean_noproj_s2" / "config.json").write_text('{"model": {"n_la')  # torn
    expected = {  # trial -> (init_seed, data_seed)
        "toeplitz_mean_proj_s0": (0, 0),  # no train record (older): the seed
        "toeplitz_mean_proj_s1": (1, 1),
        "toeplitz_mean_proj_s2": (2, 2),  # a train record from before the two seeds
        "toeplitz_nomean_noproj_s0": (0, 0),
        "toeplitz_nomean_noproj_s1": (1, 1),
        "toeplitz_nomean_noproj_s2": (2, 0),  # its own data_seed, as TrainConfig resolves it
    }
    running = load_study(d).trials.set_index("trial")  # no trials.parquet yet: rows from the trial folders
    df = collect(d, STUDIES["toeplitz_flags"], outcomes={}).set_index("trial")
    for t in (df, running):
        assert {k: (r["init_seed"], r["data_seed"]) for k, r in t.iterrows()} == {
            k: v for k, v in expected.items() if k in t.index
        }
    write_trials(df.reset_index(), d)
    summary = load_study(d).summary().set_index("arm")
    # nomean_noproj trained twice on data seed 0 (init seeds 0 and 2), so the pairs match both seeds: (0, 0) and
    # (1, 1) pair, mean_proj's (2, 2) and nomean_noproj's (2, 0) have no partner; every pair differs by -0.1
    comps = compare_to_baseline(load_study(d)._study().trials, "nomean_noproj").set_index("variant")
    assert (comps.loc["mean_proj", "test"], comps.loc["mean_proj", "n_pairs"]) == ("paired t", 2)
    assert "(paired t)" in summary.loc["mean_proj", "verdict"] and summary.loc["mean_proj", "diff"] == pytest.approx(
        -0.1
    )


def test_a_folder_without_study_json_is_a_usage_error(tmp_path):
    (tmp_path / "trials").mkdir()
    for where in (tmp_path, tmp_path / "missing"):
        with pytest.raises(UsageError) as e:
            load_study(where)
        assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
        assert str(e.value).startswith(f"{where}: no readable study.json") and "results/NAME" in str(e.value)


def test_report_returns_the_page(nanohead):
    d, _ = nanohead
    page = load_study(d).report(png=False)
    assert page == d / "report.html" and page.is_file() and "<section id='view-nanohead'>" in page.read_text()


def test_a_storage_uri_is_read_into_a_local_copy(nanohead):
    d, _ = nanohead
    (d / "trials" / "p0_s0" / "checkpoint_000001").mkdir()
    (d / "trials" / "p0_s0" / "checkpoint_000001" / "model.pt").write_bytes(b"weights")
    s = load_study(d.resolve().as_uri())
    assert s.uri == d.resolve().as_uri() and s.path != d and (s.path / "study.json").is_file()
    assert not (s.path / "trials" / "p0_s0" / "checkpoint_000001").exists()  # checkpoints stay where they are
    pd.testing.assert_frame_equal(s.trials, pd.read_parquet(d / "trials.parquet"))
    shutil.rmtree(s.path.parent)  # the copy's temporary folder
    with pytest.raises(UsageError, match="no readable study.json"):
        load_study((d / "trials").resolve().as_uri())


def test_importing_the_api_costs_nothing():
    code = "import sys, study.api; print(sorted(m for m in ('pandas', 'reports', 'ray', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
