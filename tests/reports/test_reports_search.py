"""A search's report (optuna.visualization figures, fANOVA importances with their spread over seeds) and
optuna-dashboard on a study's optuna.db, opened in headless Chromium. The Optuna studies are real SQLite storages
made with optuna (no Ray)."""

import importlib.util
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from reports_chromium import Chromium, find_chromium
from reports_synth import nanohead_rows, write_optuna, write_study

from reports import figures
from reports.analyse import analyse_study, importance_spread
from reports.build import build_report
from reports.collect import load_study

CHROMIUM = find_chromium()


def test_importances_are_the_mean_and_sd_of_fanova_fits_by_hand(tmp_path):
    study = write_optuna(tmp_path, "s", n_trials=20)
    rows = importance_spread(study, seeds=range(5))
    by_hand = {}
    for seed in range(5):  # one fANOVA fit per seed, normalised to sum to 1 as get_param_importances does
        raw = optuna.importance.FanovaImportanceEvaluator(seed=seed).evaluate(study)
        for k, v in raw.items():
            by_hand.setdefault(k, []).append(v / sum(raw.values()))
    assert [r["param"] for r in rows] == sorted(by_hand, key=lambda k: -statistics.mean(by_hand[k]))
    for r in rows:
        v = by_hand[r["param"]]
        assert r["mean"] == pytest.approx(statistics.mean(v)) and r["sd"] == pytest.approx(statistics.stdev(v))
        assert (r["min"], r["max"], r["fits"]) == (pytest.approx(min(v)), pytest.approx(max(v)), 5)
    assert len({round(v, 12) for v in by_hand["y"]}) > 1  # the fits do differ from seed to seed


def test_search_report_has_the_optuna_views_inline(tmp_path):
    d = write_study(tmp_path, "nanohead_search", nanohead_rows(failed=False, evil=False), family="nanohead_search")
    write_optuna(d, "nanohead_search", n_trials=15)
    out = build_report(d, png=False)
    page = out["html"].read_text()
    res = json.loads(out["json"].read_text())
    assert [r["param"] for r in res["optuna"]["importances"]] == ["x", "y"]
    assert all(r["fits"] == 8 and r["sd"] >= 0 for r in res["optuna"]["importances"])
    for title in ("Optimisation history", "Parameter importances", "Parallel coordinates", "(slice)", "(contour)"):
        assert title in page
    # the importance chart's axis, in the figure's JSON: plotly writes ± as is with orjson, as \u00b1 without
    assert "mean ± sd over 8 seeds" in page or "mean \\u00b1 sd over 8 seeds" in page
    assert "<script src=" not in page and "<link" not in page  # plotly.js inline: the page loads nothing


def test_optuna_hover_text_is_escaped(tmp_path):
    d = write_study(tmp_path, "s", nanohead_rows(failed=False, evil=False), family="nanohead_search")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    evil = "<img src=x onerror=alert(1)>"
    s = optuna.create_study(study_name="s", storage=f"sqlite:///{d / 'optuna.db'}")
    s.optimize(lambda t: t.suggest_float("x", 0, 1) + (t.suggest_categorical("act", [evil, "relu"]) == "relu"), 8)
    study = load_study(d)
    res = analyse_study(study)
    fig = figures.optuna_slice(study, res)
    hovers = [h for tr in fig.data for h in (tr.hovertext or [])]
    assert hovers and not any("<img" in h for h in hovers) and any("&lt;img" in h for h in hovers)


def test_two_objectives_take_the_metric_as_the_target(tmp_path):
    d = write_study(tmp_path, "s2", nanohead_rows(failed=False, evil=False), family="nanohead_search")
    write_optuna(d, "s2", n_trials=12, directions=("minimize", "minimize"))
    study = load_study(d)
    res = analyse_study(study)
    assert [r["param"] for r in res["optuna"]["importances"]][0] == "x"  # x drives the first objective
    assert figures.optuna_pareto(study, res) is not None and figures.optuna_history(study, res) is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on PATH (Debian: apt-get install chromium)")
def test_optuna_dashboard_shows_the_trials_in_chromium(tmp_path):
    assert importlib.util.find_spec("optuna_dashboard"), "optuna-dashboard missing: pip install -e '.[dashboard]'"
    study = write_optuna(tmp_path, "nanohead_search", n_trials=6)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from optuna_dashboard._cli import main; main()",  # the optuna-dashboard command, this Python's
            f"sqlite:///{tmp_path / 'optuna.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    browser = None
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120  # a shared machine: the server takes seconds to start
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as r:
                    summaries = json.loads(r.read())["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, "optuna-dashboard exited"
                assert time.monotonic() < deadline, "optuna-dashboard never answered"
                time.sleep(0.5)
        (summary,) = summaries
        assert summary["study_name"] == "nanohead_search"
        browser = Chromium(CHROMIUM, width=1280, height=1000)
        # the trials page is drawn by the dashboard's JS from its API: wait until it lists them all
        s = browser.open(
            f"{base}/dashboard/studies/{summary['study_id']}/trials",
            settle_js="document.body.innerText.indexOf('Trial 5') >= 0",
            timeout=90,
        )
        text = browser.eval(s, "document.body.innerText")
        assert "6 Trials" in text
        assert all(f"Trial {t.number}" in text for t in study.trials)
        assert "Best Trial" in text and browser.errors() == []
    finally:
        if browser:
            browser.close()
        server.terminate()
        server.wait(timeout=30)
