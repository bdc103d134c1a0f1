"""Reports built from synthetic study directories: content, escaping, failures, secrets, CLI."""

import html
import json
import math
import re
import subprocess
import sys
import time

import pytest
from reports_synth import (
    EVIL,
    SCALING_TRUTH,
    big_rows,
    nanohead_rows,
    scaling_rows,
    softmax1_rows,
    toeplitz_rows,
    vocab_depth_rows,
    write_optuna,
    write_study,
)

from reports.build import build_report, main


def _build(d):
    out = build_report(d, png=False)
    return out["html"].read_text(), json.loads(out["json"].read_text())


@pytest.fixture(scope="module")
def nanohead_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    d = write_study(
        root,
        f"nano{EVIL}",
        nanohead_rows(),
        family="nanohead",
        baseline="p0",
        samples={"p0": [f"sample {EVIL}"], "p40": ["another"]},
        meta_extra={"profile": EVIL, "hypothesis": EVIL, "args": {"note": EVIL, EVIL: 1}},
    )
    page, res = _build(d)
    return d, page, res


def test_hostile_strings_render_as_text(nanohead_report):
    _, page, res = nanohead_report
    assert EVIL not in page  # not in the markup, not in a figure's JSON, nowhere
    assert html.escape(EVIL) in page  # but shown, as text
    assert f"<title>nano{html.escape(EVIL)}: study report</title>" in page
    assert page.count("<script") == page.count("</script>")
    assert res["study"] == f"nano{EVIL}"  # results.json is data: the name as it is


def test_hostile_metric_name_is_not_used(tmp_path):
    d = write_study(
        tmp_path,
        "m",
        nanohead_rows(failed=False, evil=False),
        baseline="p0",
        meta_extra={"metric": EVIL, "family": EVIL},
    )
    page, res = _build(d)
    assert EVIL not in page and res["metric"] == "val_bpb"
    assert any("not a column name" in w for w in res["warnings"])


def test_failures_listed_with_reasons(nanohead_report):
    _, page, res = nanohead_report
    failures = {f["trial"]: f for f in res["failures"]}
    assert set(failures) == {"p20_s9", "p60_s9", f"evil{EVIL}"}
    assert failures["p20_s9"]["error"].startswith("RuntimeError: CUDA out of memory")
    assert failures["p60_s9"]["status"] == "stopped" and failures["p60_s9"]["error"] is None
    assert "RuntimeError: CUDA out of memory" in page and "(no reason recorded)" in page
    assert html.escape(f"ValueError: bad {EVIL}") in page
    assert res["counts"] == {"total": 18, "done": 15, "failed": 2, "stopped": 1, "other": 0}


def test_results_json_statistics(nanohead_report):
    _, _, res = nanohead_report
    assert res["baseline"] == "p0" and res["metric"] == "val_bpb"
    groups = {g["variant"]: g for g in res["groups"]}
    assert list(groups) == ["p0", "p20", "p40", "p60", "p80"] and all(g["n"] == 3 for g in groups.values())
    comps = {c["variant"]: c for c in res["comparisons"]}
    # p40 was made 0.05 better with noise 0.004: detected; p60 and p80 were not changed: noise
    assert comps["p40"]["verdict"] == "better" and comps["p40"]["diff"] == pytest.approx(-0.05, abs=0.01)
    assert comps["p80"]["verdict"].startswith("within noise")
    assert comps["p60"]["verdict"].startswith("within noise")
    assert "Welch" in res["test"]
    assert res["best"]["variant"] == "p40"
    assert [r["nanohead_proportion"] for r in res["nanohead"]] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert len(res["trials"]) == 18 and res["pareto"]["params_total"]
    json.dumps(res, allow_nan=False)  # strict JSON: NaN became null


def test_page_sections(nanohead_report):
    _, page, _ = nanohead_report
    assert page.count("<script type='text/javascript'>") == 1  # plotly.js inlined once
    # nothing fetched from anywhere: works from file:// offline
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    for sid in (
        "summary",
        "frontier",
        "stats",
        "view-nanohead",
        "curves",
        "failures",
        "trials",
        "environment",
        "samples",
    ):
        assert f"<section id='{sid}'>" in page, sid
    assert "filter rows" in page and 'class="sortable"' in page
    assert "val_bpb vs nano-head proportion" in page


def test_secrets_never_land_in_a_report(tmp_path, monkeypatch):
    secret = "wk-1234567890abcdefSECRET"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    rows = nanohead_rows(failed=False, evil=False)
    rows[0].update(status="failed", error=f"wandb.errors.AuthenticationError: key {secret} rejected")
    rows[1]["api_key"] = "sk-not-in-the-environment-0000"
    d = write_study(
        tmp_path,
        "secrets",
        rows,
        baseline="p0",
        meta_extra={"args": {"wandb": secret}, "environment": {"WANDB_API_KEY": secret, "HF_TOKEN": "hf_abcdefgh"}},
    )
    page, res = _build(d)
    text = json.dumps(res)
    for s in (secret, "sk-not-in-the-environment-0000", "hf_abcdefgh"):
        assert s not in page and s not in text
    assert "[redacted]" in page


def test_partial_study_without_trials_table(tmp_path):
    d = write_study(tmp_path, "partial", nanohead_rows(failed=False, evil=False), baseline="p0")
    (d / "trials.parquet").unlink()
    (d / "trials.csv").unlink()
    (d / "study.json").write_text(json.dumps({"study": "partial", "family": "nanohead", "ended": None}))
    with open(d / "trials" / "p0_s0" / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "tokens": 11000, "val_bp')  # a killed trial's torn last line
    page, res = _build(d)
    assert res["counts"]["total"] == 15 and res["counts"]["stopped"] == 15
    assert any("rebuilt" in w for w in res["warnings"]) and any("unreadable line" in w for w in res["warnings"])
    assert "cut short" in page and "<section id='warnings'>" in page


def test_softmax1_report(tmp_path):
    d = write_study(
        tmp_path,
        "softmax1_ab",
        softmax1_rows(),
        family="softmax1",
        baseline="softmax",
        samples={"softmax": ["plain softmax says hi"], "softmax1": ["quiet attention says hi"]},
    )
    page, res = _build(d)
    s = res["softmax1"]
    assert s["ratio"] == pytest.approx(0.96, abs=0.005)  # made 4% better: below 1, not past the 5% line
    assert s["verdict"].startswith("does not meet the 5% criterion") and s["base"].startswith("e")
    assert "pre-registered 5% line" in page
    assert "plain softmax says hi" in page and "quiet attention says hi" in page
    assert page.index("plain softmax says hi") < page.index("quiet attention says hi")  # baseline left


def test_softmax1_report_explains_the_ratio(tmp_path):
    d = write_study(tmp_path, "softmax1_ab", softmax1_rows(), family="softmax1", baseline="softmax")
    page, _ = _build(d)
    # the note's 2^loss on a loss in nats: 2^-0.06 = 0.9593 where e^-0.06 = 0.9418
    assert "The note's 2<sup>loss</sup> gives the same ratio only for a loss in bits" in page
    assert f"{2**-0.06:.3f}" == "0.959" and f"{math.exp(-0.06):.3f}" == "0.942"
    assert "= 0.959, where the perplexities' ratio is e<sup>-0.06</sup> = 0.942" in page


def test_note_vs_run_table_from_study_json(tmp_path):
    """study.run writes the table into study.json; the report shows it near the top, every cell as text."""
    fidelity = {
        "note": f"004{EVIL}.txt",
        "text": f"a line {EVIL}",
        "rows": [
            {"aspect": "steps", "note": "max_iters 100,000", "this_run": "100,000 steps", "reason": ""},
            {"aspect": f"data{EVIL}", "note": EVIL, "this_run": f"hf:x {EVIL}", "reason": f"private {EVIL}"},
        ],
    }
    d = write_study(
        tmp_path,
        "softmax1_ab",
        softmax1_rows(),
        family="softmax1",
        baseline="softmax",
        meta_extra={"fidelity": fidelity},
    )
    page, _ = _build(d)
    assert EVIL not in page and page.count(html.escape(EVIL)) >= 5
    section = page[page.index("<section id='fidelity'>") :]
    section = section[: section.index("</section>")]
    assert "2 aspects, 1 differ" in section and "same as the note" in section
    assert f"<td>private {html.escape(EVIL)}</td>" in section
    assert (
        page.index("<section id='summary'>")
        < page.index("<section id='fidelity'>")
        < page.index("<section id='stats'>")
    )
    plain = write_study(tmp_path / "plain", "softmax1_ab", softmax1_rows(), family="softmax1", baseline="softmax")
    assert "<section id='fidelity'>" not in _build(plain)[0]  # a study.json without the table: no section


def test_toeplitz_report(tmp_path):
    d = write_study(tmp_path, "toeplitz_flags", toeplitz_rows(), family="toeplitz", baseline="mean_proj")
    page, res = _build(d)
    rows = {r["variant"]: r for r in res["toeplitz"]}
    assert set(rows) == {"mean_proj", "mean_noproj", "nomean_proj", "nomean_noproj"}
    assert rows["mean_proj"]["gen_speedup"] == pytest.approx(400 / 150)
    assert rows["nomean_noproj"]["gen_tokens_per_s_sequential"] == pytest.approx(100.0)
    assert rows["nomean_proj"]["val_bpb"] == pytest.approx(1.425)
    assert "<table class='grid'>" in page and "generation speedup, parallel" in page


def test_vocab_depth_shares(tmp_path):
    d = write_study(tmp_path, "vocab_depth", vocab_depth_rows(), family="vocab_depth")
    _, res = _build(d)
    rows = {r["variant"]: r for r in res["vocab_depth"]}
    d4 = rows["v24576_d4"]
    assert (d4["share_embedding"], d4["share_lm_head"], d4["share_blocks"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert rows["v32768_d7"]["share_blocks"] == pytest.approx(24 / 36)


def test_scaling_fit_in_report(tmp_path):
    d = write_study(tmp_path, "scaling", scaling_rows(), family="scaling")
    page, res = _build(d)
    f = res["fits"]["v8192"]["params_total"]
    for k, v in SCALING_TRUTH.items():
        assert f[f"{k}_ci"][0] <= v <= f[f"{k}_ci"][1], (k, f[f"{k}_ci"])
    assert "Power-law fits" in page


def test_optuna_study(tmp_path):
    d = write_study(tmp_path, "nanohead_search", nanohead_rows(failed=False, evil=False), family="nanohead_search")
    write_optuna(d, "nanohead_search", n_trials=15)
    page, res = _build(d)
    o = res["optuna"]
    assert o["n_trials"] == 15 and o["directions"] == ["minimize"]
    assert [r["param"] for r in o["importances"]] == ["x", "y"]  # x drives the objective, y barely
    assert "Optimisation history" in page and "Parameter importances" in page


def test_optuna_two_objectives_pareto(tmp_path):
    d = write_study(tmp_path, "search2", nanohead_rows(failed=False, evil=False), family="nanohead_search")
    write_optuna(d, "search2", n_trials=10, directions=("minimize", "minimize"))
    page, res = _build(d)
    assert res["optuna"]["directions"] == ["minimize", "minimize"] and "Optuna Pareto front" in page


def test_cli_exit_codes(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(tmp_path)]) == 2  # a directory with no trials
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    d = write_study(tmp_path, "ok", nanohead_rows(failed=False, evil=False), baseline="p0")
    assert main([str(d), "--no-png"]) == 0
    assert (d / "report.html").exists() and (d / "results.json").exists()
    assert not list(d.glob(".*.tmp"))  # nothing half-written left behind


def test_cli_module_entry_point(tmp_path):
    p = subprocess.run([sys.executable, "-m", "reports.build", str(tmp_path / "nope")], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_thousand_trials_build_time(tmp_path, capsys):
    d = write_study(tmp_path, "big", big_rows(1000), family="nanohead_search", baseline="v0", envs=False)
    t0 = time.perf_counter()
    page, res = _build(d)
    seconds = time.perf_counter() - t0
    with capsys.disabled():  # shown even without -s: a timing to read, never to assert
        print(f"\n1,000-trial report built in {seconds:.1f}s (no PNGs), report.html {len(page) / 1e6:.1f} MB")
    assert res["counts"]["done"] == 1000 and len(res["comparisons"]) == 19
    assert {r["probe"] for r in res["probes"]} == {"probe_kurtosis", "probe_max_inf_norm"}
    assert "probe_kurtosis" in page and page.count("<tr>") > 1000
    assert not math.isnan(res["groups"][0]["ci_low"])


def test_png_export_failure_is_one_warning(tmp_path, monkeypatch, capsys):
    import plotly.io as pio

    def broken(*a, **k):
        raise RuntimeError("Chrome not found\nsecond line of the message")

    monkeypatch.setattr(pio, "write_images", broken)
    d = write_study(tmp_path, "nopng", nanohead_rows(failed=False, evil=False), baseline="p0")
    out = build_report(d, png=True)
    assert out["pngs"] == [] and out["html"].exists() and not list(d.glob("*.png"))
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["reports: warning: no PNGs written (RuntimeError: Chrome not found)"]
