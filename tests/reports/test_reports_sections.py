"""Report views by name (reports/sections.py): study.json's views, baseline and threshold drive the report, and a
study with no views gets the common report. Numbers are checked against scipy or by hand."""

import html
import json
import math

import numpy as np
import pandas as pd
import pytest
from reports_synth import EVIL, nanohead_rows, paired_rows, softmax1_rows, toeplitz_rows, trial_row, write_study
from scipy import stats

from reports.analyse import perplexity_ratio, threshold_table
from reports.build import build_report
from reports.html import fmt
from reports.sections import SECTIONS, write_outputs


def _build(d):
    out = build_report(d, png=False)
    return out["html"].read_text(), json.loads(out["json"].read_text())


def _section_ids(page):
    return [p.split("'")[0] for p in page.split("<section id='")[1:]]


def test_a_study_without_views_gets_the_common_report(tmp_path):
    rows = nanohead_rows(failed=False, evil=False)
    d = write_study(
        tmp_path,
        "my_study",
        rows,
        family="custom",
        baseline="p0",
        meta_extra={"views": [], "hypothesis": "wider is better", "note": "my notebook, page 3"},
    )
    page, res = _build(d)
    # the registered plan opens every report (tests/reports/test_reports_plan.py), then the common sections
    assert _section_ids(page)[:4] == ["plan", "summary", "frontier", "stats"] and "curves" in _section_ids(page)
    assert not [s for s in _section_ids(page) if s.startswith("view-")]
    assert "nano-head proportion" not in page and "nanohead" not in res  # the family's view is not there
    assert "hypothesis: wider is better" in page and "note: my notebook, page 3" in page
    assert "<h3>Difference from the baseline (p0)</h3>" in page
    # every arm against p0: a paired t-test as scipy computes it on the trials matched by seed (a table without a
    # data_seed column predates it: its seed set the batches)
    df = pd.DataFrame(rows).sort_values("seed")
    base = df.loc[df["variant"] == "p0", "val_bpb"].to_numpy()
    comps = {c["variant"]: c for c in res["comparisons"]}
    assert set(comps) == {"p20", "p40", "p60", "p80"}
    for variant, c in comps.items():
        arm = df.loc[df["variant"] == variant, "val_bpb"].to_numpy()
        ref = stats.ttest_rel(arm, base)
        ci = ref.confidence_interval(0.95)
        assert c["test"] == "paired t" and c["n_pairs"] == 3
        assert c["diff"] == pytest.approx(arm.mean() - base.mean(), rel=1e-12)
        assert c["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert (c["ci_low"], c["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert comps["p40"]["verdict"] == "better"


def test_the_report_says_which_test_each_arm_got_and_what_pairing_bought(tmp_path):
    rows = paired_rows()
    rows += [trial_row("lone_s0", "lone", 0, 1.5, init_seed=0, data_seed=9)]  # no partner: Welch (and no interval)
    page, res = _build(write_study(tmp_path, "paired", rows, family="custom", baseline="base"))
    comps = {c["variant"]: c for c in res["comparisons"]}
    assert {v: c["test"] for v, c in comps.items()} == {"small": "paired t", "same": "paired t", "lone": "Welch"}
    assert "paired t-test on the differences between trials that share a data_seed" in res["test"]
    small = comps["small"]
    base = np.array([r["val_bpb"] for r in rows if r["variant"] == "base"])
    arm = np.array([r["val_bpb"] for r in rows if r["variant"] == "small"])
    assert small["sd"] == pytest.approx(arm.std(ddof=1)) and small["sd_baseline"] == pytest.approx(base.std(ddof=1))
    assert small["sd_diff"] == pytest.approx((arm - base).std(ddof=1))
    for header in ("test", "n_pairs", "seed-to-seed sd", "sd of paired differences"):
        assert f">{header}</th>" in page
    unpaired = math.hypot(small["sd"], small["sd_baseline"])
    assert (
        html.escape(
            f"small: paired differences vary with sd {fmt(small['sd_diff'])}, unpaired trials' "
            f"differences with sd {fmt(unpaired)}"
        )
        in page
    )
    assert "(paired t, 4 pairs): better" in page


def test_views_in_study_json_win_over_the_family(tmp_path):
    d = write_study(tmp_path, "n", nanohead_rows(failed=False, evil=False), family="nanohead", baseline="p0")
    meta = json.loads((d / "study.json").read_text())
    assert "views" not in meta  # an older study.json: the family's view
    assert "view-nanohead" in _section_ids(_build(d)[0])
    (d / "study.json").write_text(json.dumps({**meta, "views": []}))
    assert "view-nanohead" not in _section_ids(_build(d)[0])


def test_toeplitz_baseline_comes_from_study_json_only(tmp_path):
    old = write_study(tmp_path / "old", "toeplitz_flags", toeplitz_rows(), family="toeplitz")
    page, res = _build(old)
    assert res["baseline"] is None and res["comparisons"] == []  # no guess from the family
    assert "view-toeplitz" in _section_ids(page) and "No baseline variant named" in page
    new = write_study(
        tmp_path / "new",
        "toeplitz_flags",
        toeplitz_rows(),
        family="toeplitz",
        baseline="nomean_noproj",
        meta_extra={"views": ["toeplitz"]},
    )
    _, res = _build(new)
    assert res["baseline"] == "nomean_noproj"
    assert {c["variant"] for c in res["comparisons"]} == {"mean_proj", "mean_noproj", "nomean_proj"}
    assert res["groups"][0]["variant"] == "nomean_noproj"  # the baseline first


def test_a_baseline_without_trials_is_a_warning(tmp_path):
    d = write_study(tmp_path, "t", toeplitz_rows(), family="toeplitz", baseline="mean_proj_typo")
    _, res = _build(d)
    assert res["baseline"] is None and any("'mean_proj_typo' has no trials" in w for w in res["warnings"])


def test_an_unknown_view_is_a_warning_not_a_crash(tmp_path):
    d = write_study(
        tmp_path,
        "u",
        nanohead_rows(failed=False, evil=False),
        family="custom",
        baseline="p0",
        meta_extra={"views": ["sparkle", "nanohead", EVIL]},
    )
    page, res = _build(d)
    warnings = [w for w in res["warnings"] if w.startswith("unknown report view")]
    assert len(warnings) == 2 and "'sparkle'" in warnings[0] and "nanohead" in warnings[0]  # the known ones listed
    assert "view-nanohead" in _section_ids(page) and "<section id='warnings'>" in page
    assert EVIL not in page and html.escape(EVIL) in page


def _hand_ratio(base, arm):
    """exp of Welch's difference of the logs and its 95% interval, written out."""
    la, lb = np.log(base), np.log(arm)
    va, vb = la.var(ddof=1) / len(la), lb.var(ddof=1) / len(lb)
    df = (va + vb) ** 2 / (va**2 / (len(la) - 1) + vb**2 / (len(lb) - 1))
    d, half = lb.mean() - la.mean(), stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    return math.exp(d), math.exp(d - half), math.exp(d + half)


def test_threshold_verdict_by_hand(tmp_path):
    arms = {
        "base": [2.00, 2.02, 1.98],
        "good": [1.80, 1.81, 1.79],  # 10% lower, tight: the whole interval below 0.95
        "near": [1.87, 1.93, 1.81],  # 5.5% lower on average, but noisy: the interval reaches above 0.95
        "same": [2.01, 1.99, 2.00],
    }
    rows = [trial_row(f"{v}_s{i}", v, i, x) for v, xs in arms.items() for i, x in enumerate(xs)]
    d = write_study(tmp_path, "th", rows, family="custom", baseline="base", meta_extra={"views": [], "threshold": 0.05})
    page, res = _build(d)
    th = {r["variant"]: r for r in res["threshold"]["arms"]}
    for v in ("good", "near", "same"):
        ratio, lo, hi = _hand_ratio(np.array(arms["base"]), np.array(arms[v]))
        assert (th[v]["ratio"], th[v]["ci_low"], th[v]["ci_high"]) == pytest.approx((ratio, lo, hi), rel=1e-9)
    assert _hand_ratio(np.array(arms["base"]), np.array(arms["good"]))[2] < 0.95
    near = _hand_ratio(np.array(arms["base"]), np.array(arms["near"]))
    assert near[0] < 0.95 < near[2]
    assert (th["good"]["met"], th["near"]["met"], th["same"]["met"]) == (True, False, False)
    assert th["good"]["verdict"] == "meets the 5% threshold: the whole interval is below 0.95"
    assert th["near"]["verdict"].endswith("the interval reaches above it: not shown")
    assert th["same"]["verdict"] == "does not meet the 5% threshold"
    assert "<h3>The 5% threshold</h3>" in page and "meets the 5% threshold" in page


def test_threshold_when_higher_is_better(tmp_path):
    rows = [
        trial_row(f"{v}_s{i}", v, i, 1.0, accuracy=x)
        for v, xs in {"base": [0.50, 0.51, 0.49], "up": [0.60, 0.61, 0.59]}.items()
        for i, x in enumerate(xs)
    ]
    meta = {"views": [], "threshold": 0.1, "metric": "accuracy", "mode": "max"}
    _, res = _build(write_study(tmp_path, "acc", rows, family="custom", baseline="base", meta_extra=meta))
    (r,) = res["threshold"]["arms"]
    ratio, lo, _ = _hand_ratio(np.array([0.50, 0.51, 0.49]), np.array([0.60, 0.61, 0.59]))
    assert r["ratio"] == pytest.approx(ratio) and lo > 1.1 and r["met"] is True
    assert r["verdict"] == "meets the 10% threshold: the whole interval is above 1.1"


def test_softmax1_criterion_is_the_threshold_rule_on_perplexity():
    t = pd.DataFrame(softmax1_rows(seeds=4))
    ppl = threshold_table(t, "softmax", "val_ppl", "min", 0.05)[0]
    crit = perplexity_ratio(t, "softmax", "softmax1", threshold=0.05)
    assert (ppl["ratio"], ppl["ci_low"], ppl["ci_high"]) == pytest.approx(
        (crit["ratio"], crit["ci_low"], crit["ci_high"]), rel=1e-9
    )
    assert crit["verdict"].startswith(ppl["verdict"].replace("threshold", "criterion"))


def test_no_threshold_without_one_in_study_json(tmp_path):
    d = write_study(tmp_path, "n", nanohead_rows(failed=False, evil=False), baseline="p0")
    assert "threshold" not in _build(d)[1]
    d = write_study(
        tmp_path, "bad", nanohead_rows(failed=False, evil=False), baseline="p0", meta_extra={"threshold": 5}
    )
    _, res = _build(d)
    assert "threshold" not in res and any("threshold 5 is not a fraction" in w for w in res["warnings"])


def test_every_view_bundles_a_title_and_its_parts():
    assert set(SECTIONS) == {"nanohead", "optuna", "softmax1", "toeplitz", "vocab_depth", "scaling", "scaling_flops"}
    for name, s in SECTIONS.items():
        assert s.title and callable(s.analyse) and callable(s.html), name
        assert s.figures and all(callable(b) for b in s.figures.values()), name


def test_view_outputs(tmp_path):
    df = pd.DataFrame(toeplitz_rows())
    write_outputs(df, [], tmp_path)
    assert list(tmp_path.iterdir()) == []
    write_outputs(df, ["toeplitz", "nope"], tmp_path)
    got = json.loads((tmp_path / "all_results.json").read_text())
    assert set(got) == set(df["trial"]) and got["mean_proj_s0"]["training"]["eval_bpb"] == pytest.approx(1.4)


def test_softmax1_judges_its_threshold_on_perplexity_once(tmp_path):
    """softmax1_ab's 5% is on perplexity, e^(loss difference): its view judges it, and the common threshold table
    (a ratio of the study's metric, val_bpb) is left out rather than judging a second ratio."""
    rows = softmax1_rows()
    d = write_study(
        tmp_path,
        "softmax1_ab",
        rows,
        family="softmax1",
        baseline="softmax",
        meta_extra={"views": ["softmax1"], "threshold": 0.05},
    )
    page, res = _build(d)
    assert "threshold" not in res
    df = pd.DataFrame(rows)
    a = df.loc[df["variant"] == "softmax", "val_loss"]
    b = df.loc[df["variant"] == "softmax1", "val_loss"]
    assert res["softmax1"]["ratio"] == pytest.approx(math.exp(b.mean() - a.mean()), rel=1e-9)
    assert res["softmax1"]["threshold"] == pytest.approx(0.95)
