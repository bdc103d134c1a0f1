"""The README's quickstart as a new user types it: a fresh, empty working folder, no --output (so the
default, relative `results`), then --resume on the finished study and `reports.build` on a relative path.
While the study runs, a second driver on the same study is refused and the first finishes intact.

(`ray start` beside a study, --address auto and a stale cluster file: tests/study/test_submit.py, which owns
a head. A relative --output through a bucket-free run: there too.)"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from study_cli import cli_env, read_metrics

pytestmark = pytest.mark.ray
QUICKSTART = ["nanohead_grid", "--profile", "smoke"]  # the README's first command, at the smoke profile
RAY_CHATTER = ("View detailed results", "TensorBoard", "core_worker.cc", "╭", "Configuration for experiment")


def _typed(cwd: Path, cache: str, *args, module="study.run", timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=cli_env(cache),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def quickstart(token_cache, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("fresh")
    out, err = open(cwd.parent / "quickstart.out", "w+"), open(cwd.parent / "quickstart.err", "w+")
    first = subprocess.Popen(
        [sys.executable, "-m", "study.run", *QUICKSTART],
        cwd=cwd,
        env=cli_env(token_cache),
        stdout=out,
        stderr=err,
        text=True,
    )
    lock = cwd / "results" / "nanohead_grid" / ".lock"
    deadline = time.time() + 120
    while not lock.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert lock.exists(), "the first driver never took the study's lock"
    second = _typed(cwd, token_cache, *QUICKSTART)
    second_resume = _typed(cwd, token_cache, *QUICKSTART, "--resume")
    first.wait(timeout=600)
    out.seek(0), err.seek(0)
    return dict(
        cwd=cwd,
        rc=first.returncode,
        stdout=out.read(),
        stderr=err.read(),
        pid=first.pid,
        second=second,
        second_resume=second_resume,
        cache=token_cache,
    )


def test_the_quickstart_exits_0_with_the_report_in_results(quickstart):
    assert quickstart["rc"] == 0, quickstart["stdout"][-3000:] + quickstart["stderr"][-3000:]
    study = quickstart["cwd"] / "results" / "nanohead_grid"
    assert (study / "report.html").stat().st_size > 0
    trials = pd.read_parquet(study / "trials.parquet")
    assert sorted(trials["status"]) == ["done"] * 5
    assert not (study / ".lock").exists()  # released at the end


def test_the_quickstart_shows_the_projects_lines_and_logs_rays(quickstart):
    shown = quickstart["stdout"] + quickstart["stderr"]
    assert not [c for c in RAY_CHATTER if c in shown], shown[:3000]
    lines = quickstart["stdout"].splitlines()
    assert lines[0].startswith("data: wiki / bpe:512")
    assert lines[1].startswith("nanohead_grid (smoke profile): up to ")
    assert lines[-1] == f"report: {quickstart['cwd'] / 'results' / 'nanohead_grid' / 'report.html'}"
    log = (quickstart["cwd"] / "results" / "nanohead_grid" / "driver.log").read_text()
    assert "View detailed results" in log  # Ray's own output is kept, out of the way
    assert all(line in log for line in lines[1:])


def test_a_second_driver_is_refused_while_the_first_runs(quickstart):
    for proc in (quickstart["second"], quickstart["second_resume"]):
        assert proc.returncode == 2
        assert proc.stdout == ""
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error: ") and "is being run by another driver" in line
        assert f"pid {quickstart['pid']} on " in line


def test_the_first_driver_finished_every_trial_with_its_files_intact(quickstart):
    study = quickstart["cwd"] / "results" / "nanohead_grid"
    trials = pd.read_parquet(study / "trials.parquet")
    for name in trials["trial"]:
        metrics = read_metrics(study / "trials" / name / "metrics.jsonl")
        assert [m["step"] for m in metrics] == [10, 20, 30]  # smoke: 30 steps, an eval every 10
        assert json.loads((study / "trials" / name / "config.json").read_text())["trial"]["max_steps"] == 30
    assert json.loads((study / "study.json").read_text())["ended"]


def test_resume_of_the_finished_study_then_the_report_from_a_relative_path(quickstart):
    study = quickstart["cwd"] / "results" / "nanohead_grid"
    before = pd.read_parquet(study / "trials.parquet")
    resumed = _typed(quickstart["cwd"], quickstart["cache"], *QUICKSTART, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = pd.read_parquet(study / "trials.parquet")
    pd.testing.assert_series_equal(before["val_bpb"], after["val_bpb"])  # nothing retrained
    report = _typed(quickstart["cwd"], quickstart["cache"], "results/nanohead_grid", "--no-png", module="reports.build")
    assert report.returncode == 0, report.stderr
    assert (study / "report.html").stat().st_size > 0
