"""python -m reports.compare on synthetic runs of one study, checked against scipy and hand computations."""

import html
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from reports_synth import EVIL, trial_row, write_study
from scipy import stats

from reports.compare import compare_runs, load_run, main, run_names


def run_rows(effects, seeds, sd=0.003, seed=0, status="done"):
    """Trials of arms whose val_bpb is 1.5 + effect + N(0, sd), one per seed."""
    rng = np.random.default_rng(seed)
    return [
        trial_row(f"{v}_s{s}", v, s, 1.5 + d + rng.normal(0, sd), status=status)
        for v, d in effects.items()
        for s in range(seeds)
    ]


def write_run(root, rows, name="demo", base=None, **kw):
    """A study folder whose trials carry trial_config.json (base keys + the arm's axis value + the seed), as the
    runner writes it."""
    d = write_study(root, name, rows, baseline=kw.pop("baseline", "p0"), **kw)
    for r in rows:
        config = {**(base or {"n_layer": 2, "lr": 0.01}), "arm": r["variant"], "seed": r["seed"]}
        (d / "trials" / r["trial"] / "trial_config.json").write_text(json.dumps(config))
    return d


def values(rows, variant):
    return np.array([r["val_bpb"] for r in rows if r["variant"] == variant and r["status"] == "done"])


def test_difference_interval_and_holm_match_scipy(tmp_path):
    ra = run_rows({"p0": 0, "p20": -0.01, "p40": 0.0}, seeds=3, seed=1)
    rb = run_rows({"p0": 0, "p20": 0.0, "p40": 0.02}, seeds=5, sd=0.006, seed=2)
    a = load_run(str(write_run(tmp_path / "a", ra)), "A")
    b = load_run(str(write_run(tmp_path / "b", rb)), "B")
    cmp = compare_runs(a, b)
    assert [r["arm"] for r in cmp["rows"]] == ["p0", "p20", "p40"]
    ps = []
    for r in cmp["rows"]:
        va, vb = values(ra, r["arm"]), values(rb, r["arm"])
        ref = stats.ttest_ind(vb, va, equal_var=False)
        ci = ref.confidence_interval(0.95)
        assert r["mean_a"] == pytest.approx(va.mean()) and r["mean_b"] == pytest.approx(vb.mean())
        assert r["diff"] == pytest.approx(vb.mean() - va.mean(), abs=1e-12)
        assert (r["ci_low"], r["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
        assert r["p_value"] == pytest.approx(ref.pvalue)
        # Welch by hand: se from each run's own variance, Satterthwaite's df
        sa, sb = va.var(ddof=1) / len(va), vb.var(ddof=1) / len(vb)
        df = (sa + sb) ** 2 / (sa**2 / (len(va) - 1) + sb**2 / (len(vb) - 1))
        half = stats.t.ppf(0.975, df) * math.sqrt(sa + sb)
        assert r["ci_high"] - r["ci_low"] == pytest.approx(2 * half)
        ps.append(ref.pvalue)
    # Holm by hand over the three arms: the k-th smallest p times (4 - k), kept monotone
    order = np.argsort(ps)
    expected, running = [0.0] * 3, 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (3 - k) * ps[i]))
        expected[i] = running
    assert [r["p_holm"] for r in cmp["rows"]] == pytest.approx(expected)
    p40 = cmp["rows"][2]
    assert p40["p_holm"] < 0.05 and p40["runs"] == "B worse"  # 0.02 higher in B: lower val_bpb is better


def test_ranking_kendall_tau_against_scipy_and_by_hand(tmp_path):
    # A ranks p20 < p0 < p40 < p60, B swaps p0 and p40: one discordant pair of six, tau = (5 - 1) / 6
    ra = run_rows({"p0": 0.0, "p20": -0.05, "p40": 0.05, "p60": 0.10}, seeds=2, sd=1e-4)
    rb = run_rows({"p0": 0.06, "p20": -0.05, "p40": 0.04, "p60": 0.10}, seeds=2, sd=1e-4, seed=3)
    a = load_run(str(write_run(tmp_path / "a", ra)), "A")
    b = load_run(str(write_run(tmp_path / "b", rb)), "B")
    cmp = compare_runs(a, b)
    means_a = [values(ra, v).mean() for v in ("p0", "p20", "p40", "p60")]
    means_b = [values(rb, v).mean() for v in ("p0", "p20", "p40", "p60")]
    assert cmp["tau"] == pytest.approx(stats.kendalltau(means_a, means_b).statistic)
    assert cmp["tau"] == pytest.approx(4 / 6)
    assert cmp["order_a"] == ["p20", "p0", "p40", "p60"] and cmp["order_b"] == ["p20", "p40", "p0", "p60"]
    assert cmp["best_same"]


def test_a_verdict_that_flips_between_runs(tmp_path, monkeypatch):
    # p20 is clearly better than p0 in A and the same as p0 in B; p40 the same as p0 in both
    ra = run_rows({"p0": 0, "p20": -0.05, "p40": 0.0}, seeds=4, sd=0.002, seed=4)
    rb = run_rows({"p0": 0, "p20": 0.0, "p40": 0.0}, seeds=4, sd=0.002, seed=5)
    da, db = write_run(tmp_path / "a", ra), write_run(tmp_path / "b", rb)
    a, b = load_run(str(da), "A"), load_run(str(db), "B")
    cmp = compare_runs(a, b)
    by_arm = {r["arm"]: r for r in cmp["rows"]}
    assert by_arm["p20"]["verdict_a"] == "better" and by_arm["p20"]["verdict_b"] == "no difference"
    assert not by_arm["p20"]["agree"] and by_arm["p40"]["agree"]
    assert not cmp["conclusion_same"]
    assert cmp["conclusion"].startswith("The study's conclusion differs between the runs: 1 of 2 arms")
    assert "p20: better in A, no difference in B" in cmp["conclusion"]
    # the same study against itself: every verdict agrees, and the page says so at the top
    same = compare_runs(a, load_run(str(da), "B"))
    assert same["conclusion_same"] and same["conclusion"].startswith("The study's conclusion is the same in both runs")
    monkeypatch.chdir(tmp_path)
    assert main([str(da), str(db)]) == 0
    page = (tmp_path / "compare_a_demo_vs_b_demo.html").read_text()
    header = page[page.index("<header>") : page.index("</header>")]
    assert "The study&#x27;s conclusion differs between the runs" in header


def test_profile_change_matches_arms_and_names_base_keys(tmp_path):
    ra = run_rows({"p0": 0, "p20": 0.0}, seeds=2)
    rb = run_rows({"p0": 0, "p20": 0.0, "p40": 0.0}, seeds=2, seed=6)
    da = write_run(tmp_path / "a", ra, base={"n_layer": 2, "lr": 0.01, "max_steps": 30})
    db = write_run(tmp_path / "b", rb, base={"n_layer": 6, "lr": 0.01}, meta_extra={"profile": "cpu"})
    cmp = compare_runs(load_run(str(da), "A"), load_run(str(db), "B"))
    assert [r["arm"] for r in cmp["rows"]] == ["p0", "p20"] and cmp["only_b"] == ["p40"] and cmp["only_a"] == []
    assert cmp["base_diff"] == [
        {"key": "max_steps", "a": 30, "b": "(not a base key)"},
        {"key": "n_layer", "a": 2, "b": 6},
    ]  # lr is the same; arm and seed vary within a run, so they are no base keys
    differs = {s["setting"]: (s["a"], s["b"]) for s in cmp["settings"] if s["differs"]}
    assert differs == {"profile": ("smoke", "cpu")}


def test_arms_at_several_budgets_match_by_arm_and_budget(tmp_path):
    def rows(shift):
        return [
            trial_row(f"{v}_{int(n)}_s{s}", v, s, 1.5 + shift + 0.001 * s, budget=n)
            for v in ("p0", "p20")
            for n in (1e6, 2e6)
            for s in range(2)
        ]

    cmp = compare_runs(
        load_run(str(write_run(tmp_path / "a", rows(0.0))), "A"),
        load_run(str(write_run(tmp_path / "b", rows(0.01))), "B"),
    )
    assert [r["arm"] for r in cmp["rows"]] == ["p0 @ 1M", "p0 @ 2M", "p20 @ 1M", "p20 @ 2M"]
    assert [r["diff"] for r in cmp["rows"]] == pytest.approx([0.01] * 4)


def test_names_and_output(tmp_path, monkeypatch, capsys):
    assert run_names("/x/cmpA/softmax1_ab", "/x/cmpB/softmax1_ab") == ("cmpA/softmax1_ab", "cmpB/softmax1_ab")
    assert run_names("/r/one", "/r/two") == ("one", "two")
    assert run_names("s3://bkt/a/s", "s3://bkt/b/s?endpoint_override=h") == ("a/s", "b/s")
    da = write_run(tmp_path / "cmpA", run_rows({"p0": 0, "p20": 0}, seeds=2))
    db = write_run(tmp_path / "cmpB", run_rows({"p0": 0, "p20": 0}, seeds=2, seed=7))
    monkeypatch.chdir(tmp_path)
    assert main([str(da), str(db)]) == 0
    out = tmp_path / "compare_cmpA_demo_vs_cmpB_demo.html"
    assert capsys.readouterr().out.strip() == str(out) and out.exists()
    assert main([str(da), str(db), "--output", str(tmp_path / "mine.html")]) == 0
    assert (tmp_path / "mine.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "compare_cmpA_demo_vs_cmpB_demo.html",
        "mine.html",
    ]


def test_hostile_arm_label_is_escaped(tmp_path, monkeypatch):
    arms = {"p0": 0.0, f"p{EVIL}": 0.0}
    da = write_run(tmp_path / "a", run_rows(arms, seeds=2), meta_extra={"profile": EVIL})
    db = write_run(tmp_path / "b", run_rows(arms, seeds=2, seed=8))
    out = tmp_path / "page.html"
    monkeypatch.chdir(tmp_path)
    assert main([str(da), str(db), "--output", str(out)]) == 0
    page = out.read_text()
    assert EVIL not in page  # not as markup, not in the figure's JSON
    assert html.escape(EVIL) in page
    assert page.count("<script") == page.count("</script>")


@pytest.mark.parametrize(
    "case, words",
    [
        ("missing", "no readable study.json"),
        ("no_study", "no readable study.json"),
        ("other_study", "is a run of study 'demo' and"),
        ("no_common_arm", "have no arm in common"),
        ("no_finished", "no finished trials"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, case, words):
    da = write_run(tmp_path / "a", run_rows({"p0": 0, "p20": 0}, seeds=2))
    if case == "missing":
        db = tmp_path / "nowhere"
    elif case == "no_study":
        db = tmp_path / "empty"
        db.mkdir()
    elif case == "other_study":
        db = write_run(tmp_path / "b", run_rows({"p0": 0, "p20": 0}, seeds=2), name="other")
    elif case == "no_common_arm":
        db = write_run(tmp_path / "b", run_rows({"q0": 0, "q1": 0}, seeds=2), baseline="q0")
    else:
        db = write_run(tmp_path / "b", run_rows({"p0": 0, "p20": 0}, seeds=2, status="failed"))
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main([str(da), str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1
    assert sorted(tmp_path.rglob("*")) == before  # no page, no temporary file


def test_module_entry_point(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "reports.compare", str(tmp_path / "a"), str(tmp_path / "b")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert not list(tmp_path.iterdir())


def test_the_readme_command(tmp_path):
    rows = run_rows({"softmax": 0.0, "softmax1": -0.01}, seeds=3)
    for folder, profile in (("cpu", "cpu"), ("gpu", "gpu")):
        write_run(tmp_path / folder, rows, name="softmax1_ab", baseline="softmax", meta_extra={"profile": profile})
    command = "python -m reports.compare cpu/softmax1_ab gpu/softmax1_ab"
    p = subprocess.run([sys.executable, *command.split()[1:]], capture_output=True, text=True, cwd=tmp_path)
    out = tmp_path / "compare_cpu_softmax1_ab_vs_gpu_softmax1_ab.html"
    assert p.returncode == 0 and p.stdout.strip() == str(out) and p.stderr == ""
    assert "The study&#x27;s conclusion is the same in both runs" in out.read_text()
