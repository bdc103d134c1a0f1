"""The plan a study registers in study.json before its first trial, and --resume keeping it. No Ray here: the study
folders are written by study.service.write_study_json, as a run's first step writes them (tests/study/
test_study_plan_ray.py runs the real thing)."""

import hashlib
import json
from dataclasses import replace

import pytest

import study.run
from study.catalog import get_study
from study.run import RunOptions, make_plan

# The registered fields, written out here (the reference for reports.plan.PLAN_FIELDS).
FIELDS = [
    "hypothesis",
    "metric",
    "mode",
    "baseline",
    "arms",
    "comparisons",
    "decision_rule",
    "alpha",
    "power",
    "seeds",
    "test",
]
STARTED = "2026-01-01T00:00:00+00:00"


def by_hand(plan: dict) -> str:
    """sha256 of the fields as canonical JSON: sorted keys, no spaces, UTF-8."""
    text = json.dumps({k: plan[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def started_study(root, **options):
    """A softmax1_ab study as its first run leaves it before the trials: study.json, and a Tune experiment for
    --resume to find (tuner.pkl: its contents are Tune's and matter only to a resume that passes the checks)."""
    from study.service import write_study_json

    options = RunOptions(profile="smoke", output=str(root), wandb="disabled", **options)
    plan = make_plan(get_study("softmax1_ab"), options)
    folder = root / "softmax1_ab"
    (folder / "tune").mkdir(parents=True)
    (folder / "tune" / "tuner.pkl").write_bytes(b"")
    write_study_json(plan, folder, STARTED, None, False)
    return plan, folder


def test_the_plan_is_written_and_hashed(tmp_path):
    plan, folder = started_study(tmp_path, seeds=3, mde=0.01, power=0.9)
    meta = json.loads((folder / "study.json").read_text())
    p = meta["plan"]
    spec = get_study("softmax1_ab")
    assert p["hypothesis"] == spec.hypothesis and (p["metric"], p["mode"]) == ("val_bpb", "min")
    assert p["baseline"] == "softmax" and p["arms"] == ["softmax", "softmax1"] and p["comparisons"] == 1
    assert p["decision_rule"]["threshold"] == 0.05 and p["decision_rule"]["mde"] == 0.01
    assert "5%" in p["decision_rule"]["text"] and "D = 0.01 val_bpb" in p["decision_rule"]["text"]
    assert (p["alpha"], p["power"], p["seeds"]) == (0.05, 0.9, 3)
    assert "paired t-test" in p["test"] and "data_seed" in p["test"] and "Holm" in p["test"]
    assert p["recorded"] == STARTED
    assert p["sha256"] == by_hand(p)
    assert p["planner"]["seeds_needed"] is None  # no pilot yet: the planner said so, outside the hash
    assert "deviations" not in meta


def test_the_plan_stays_as_registered_when_study_json_is_rewritten(tmp_path):
    """The end of a run (or a resume) rewrites study.json: the plan is the one recorded before the first trial."""
    from study.service import write_study_json

    plan, folder = started_study(tmp_path)
    first = json.loads((folder / "study.json").read_text())["plan"]
    later = replace(plan, options=replace(plan.options, seeds=2))
    write_study_json(later, folder, "2026-02-01T00:00:00+00:00", "2026-02-01T01:00:00+00:00", False)
    meta = json.loads((folder / "study.json").read_text())
    assert meta["plan"] == first and meta["args"]["seeds"] == 2


def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "changed, words",
    [
        (["--mde", "0.02"], ["--mde 0.01", "not --mde 0.02", "registered its plan"]),
        (["--power", "0.9", "--mde", "0.01"], ["--power 0.8", "not --power 0.9"]),
        (["--set", "lr=0.01", "--mde", "0.01"], ["no --set", "not --set lr=0.01"]),
        (["--seeds", "1", "--mde", "0.01"], ["--seeds 2", "not --seeds 1"]),
    ],
    ids=["mde", "power", "set", "fewer_seeds"],
)
def test_a_resume_that_changes_the_plan_is_refused_in_one_line(capsys, tmp_path, changed, words):
    _, folder = started_study(tmp_path, seeds=2, mde=0.01)
    before = snapshot(folder)
    argv = ["softmax1_ab", "--profile", "smoke", "--seeds", "2", *changed, "--wandb", "disabled", "--resume"]
    assert study.run.main([*argv, "--output", str(tmp_path)]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("error: --resume:"), err
    for word in words:
        assert word in err[0], (word, err[0])
    assert snapshot(folder) == before


def test_a_resume_of_an_edited_study_names_the_field(tmp_path):
    """A study file edited between a start and its resume: the registered hypothesis no longer holds."""
    from study.results import StudyStorage

    plan, folder = started_study(tmp_path)
    edited = replace(plan, spec=replace(plan.spec, hypothesis="softmax1 changes nothing"))
    with pytest.raises(study.run.UsageError, match=r"with hypothesis '.*pre-registered.*', not hypothesis 'softmax1"):
        study.run.check_resume_matches(StudyStorage(folder), edited)


def test_more_seeds_on_a_resume_are_a_deviation(tmp_path):
    from study.results import StudyStorage

    plan, folder = started_study(tmp_path)
    more = make_plan(plan.spec, replace(plan.options, seeds=3, resume=True))
    (deviation,) = study.run.check_resume_matches(StudyStorage(folder), more)
    assert (
        deviation["kind"] == "seeds" and "from 1 to 3" in deviation["what"] and "(4 more trials)" in deviation["what"]
    )
    assert study.run.check_resume_matches(StudyStorage(folder), plan) == []  # the same seeds: nothing to record
