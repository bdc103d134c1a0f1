"""The registered plan on a real local Ray run, through the CLI: softmax1_ab at the smoke profile with --mde, then
refused resumes that would change the plan, then --seeds 2 on --resume, which runs the new seeds and records the
deviation, and the report that shows both. One small study, shared by the tests in order (module fixtures)."""

import hashlib
import json
from datetime import datetime

import pandas as pd
import pytest
from study_cli import run_cli
from test_study_plan import FIELDS  # the registered fields, written out once

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


def args(out, *extra):
    return ["softmax1_ab", "--profile", "smoke", "--mde", "0.01", *extra, "--output", out, "--wandb", "disabled"]


@pytest.fixture(scope="module")
def first(token_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("plan")
    proc = run_cli(token_cache, *args(out, "--no-report"), timeout=600)
    return proc, out / "softmax1_ab"


@pytest.fixture(scope="module")
def extended(first, token_cache):
    """The refused resumes run first (they must change nothing), then --seeds 2."""
    _, folder = first
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    refused = [
        run_cli(token_cache, *args(folder.parent, "--resume", "--mde", "0.02")),
        run_cli(token_cache, *args(folder.parent, "--resume", "--set", "lr=0.01")),
    ]
    after_refusals = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    plan_before = json.loads((folder / "study.json").read_text())["plan"]
    proc = run_cli(token_cache, *args(folder.parent, "--seeds", "2", "--resume", "--no-report"), timeout=600)
    return dict(refused=refused, unchanged=before == after_refusals, plan_before=plan_before, proc=proc)


def test_the_run_prints_the_planner_line_first_and_registers_the_plan(first):
    proc, folder = first
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    # --mde on a run: the planner's line before the run's own; no pilot yet (a fresh folder)
    assert lines[0].startswith("seeds needed: unknown, no pilot") and "--seeds 2" in lines[0], lines[:3]
    plan = json.loads((folder / "study.json").read_text())["plan"]
    text = json.dumps({k: plan[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert plan["sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert plan["decision_rule"]["mde"] == 0.01 and plan["seeds"] == 1 and plan["arms"] == ["softmax", "softmax1"]
    # recorded before the first trial: earlier than any trial's first file
    recorded = datetime.fromisoformat(plan["recorded"]).timestamp()
    assert recorded < min(p.stat().st_mtime for p in folder.glob("trials/*/trial_config.json"))


def test_a_resume_that_changes_the_plan_is_refused_and_changes_nothing(extended):
    mde, lr = extended["refused"]
    for proc, words in ((mde, ["registered its plan", "--mde 0.01", "not --mde 0.02"]), (lr, ["--set lr=0.01"])):
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert all(w in lines[0] for w in words), lines[0]
    assert extended["unchanged"]


def test_more_seeds_on_a_resume_run_and_are_recorded_as_a_deviation(extended, first):
    proc = extended["proc"]
    _, folder = first
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    df = pd.read_parquet(folder / "trials.parquet")
    assert len(df) == 4 and (df["status"] == "done").all() and df["trial"].is_unique
    assert df.groupby("variant")["seed"].apply(sorted).to_dict() == {"softmax": [0, 1], "softmax1": [0, 1]}
    assert (folder / "tune_2" / "tuner.pkl").is_file()  # the new seeds: a Tune experiment of their own
    meta = json.loads((folder / "study.json").read_text())
    assert meta["plan"] == extended["plan_before"] and meta["args"]["seeds"] == 2  # the plan stays as registered
    (deviation,) = meta["deviations"]
    assert deviation["what"].startswith("seeds extended from 1 to 2 per config by --seeds 2 on --resume")
    assert datetime.fromisoformat(deviation["when"]) > datetime.fromisoformat(meta["plan"]["recorded"])


def test_the_report_shows_the_plan_and_the_deviation(extended, first):
    from reports.build import build_report

    _, folder = first
    page = build_report(folder, png=False)["html"].read_text()
    plan = page[page.index("<section id='plan'>") :]
    plan = plan[: plan.index("</section>")]
    assert "it matches the fields below" in plan and "<li class='deviation'>" in plan and "from 1 to 2" in plan
    methods = page[page.index("<section id='methods'>") :]
    assert "2 seeds each" in methods and "Deviations from the plan: seeds extended from 1 to 2" in methods
