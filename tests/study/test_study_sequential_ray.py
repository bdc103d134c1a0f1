"""--seeds auto end to end, through the CLI: a study (tests/study/seq_check.py) with an arm at a thirtieth of the
learning rate (a large effect) and an arm that differs from the baseline only in its random init (a null arm).
Round 1 runs 2 seeds of every arm; the slow arms are decided there; the null arm and the baseline get a third seed
in round 2. A crash in round 2 and a --resume continue that round: nothing of round 1 runs again."""

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from study_cli import crash, experiment_trials, run_cli, start_cli

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

STUDY_FILE = Path(__file__).parent / "seq_check.py"
BASE, NULL, SLOW, SLOW_REINIT = "lr=0.003", "lr=0.003 reinit", "lr=0.0001", "lr=0.0001 reinit"


def test_sequential_seeding_stops_a_large_effect_and_seeds_a_null_arm_through_a_crash(token_cache, tmp_path):
    args = [STUDY_FILE, "--profile", "smoke", "--seeds", "auto", "--mde", "0.01", "--max-seeds", "3"]
    args += [
        "--set",
        "max_steps=60",
        "--output",
        tmp_path,
        "--wandb",
        "disabled",
    ]  # 60 steps: round 2 runs long enough to be caught
    study_dir = tmp_path / "seq_check"
    log = tmp_path / "first.log"
    proc = start_cli(token_cache, *args, log=log)
    try:
        deadline = time.time() + 600
        while not any(s == "RUNNING" for s, _ in experiment_trials(study_dir / "tune_2").values()):
            assert proc.poll() is None, (
                "the study ended before round 2 could be interrupted:\n" + log.read_text()[-3000:]
            )
            assert time.time() < deadline, "round 2 never started:\n" + log.read_text()[-3000:]
            time.sleep(0.5)
        round_1 = sorted((study_dir / "trials").glob("*/metrics.jsonl"))
        before = {
            p: p.stat().st_mtime_ns for p in round_1 if (p.parent.name.endswith(("_i0", "_i1", "_i1000", "_i1001")))
        }
    finally:
        crash(proc)
    first = log.read_text()
    assert "round 1: seeds 0, 1 of every arm (8 trials, tune)" in first
    assert f"  {SLOW}: decided, worse: the interval" in first and f"  {SLOW_REINIT}: decided, worse" in first
    assert f"  {NULL}: undecided, the interval" in first
    assert f"round 2: seed 2 of {NULL} and the baseline (2 trials, tune_2)" in first

    resumed = run_cli(token_cache, *args, "--resume", timeout=600)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    assert "resuming round 2 (tune_2)" in out and "round 1:" not in out
    # after round 2 the null arm has its 3 seeds: the cap, or decided (at alpha 0.025 a look may call a null arm
    # different by chance)
    assert f"the cap of 3 seeds is reached with {NULL} undecided" in out or "every arm is decided after round 2" in out
    assert not (study_dir / "tune_3").exists()

    df = pd.read_parquet(study_dir / "trials.parquet")
    assert (df["status"] == "done").all(), df[["trial", "status", "error"]]
    seeds = df.groupby("variant")["seed"].apply(sorted).to_dict()
    assert seeds == {BASE: [0, 1, 2], NULL: [0, 1, 2], SLOW: [0, 1], SLOW_REINIT: [0, 1]}
    assert len(df) == len(set(df["trial"])) == 10  # every trial once
    for path, mtime in before.items():  # round 1's trials did not run again
        assert path.stat().st_mtime_ns == mtime, path

    meta = json.loads((study_dir / "study.json").read_text())
    assert meta["plan"]["seeds"].startswith("sequential: 2 per arm, then one more per round")
    assert meta["args"]["seeds"] == "auto" and meta["args"]["max_seeds"] == 3
    report = (study_dir / "report.html").read_text()
    section = report[report.index("id='sequential'") :]
    section = section[: section.index("</section>")]
    assert "Sequential seeding: each arm&#x27;s seeds and why it stopped" in section
    for arm, n, status in ((SLOW, 2, "decided"), (SLOW_REINIT, 2, "decided"), (NULL, 3, "")):
        row = section[section.index(f"<td>{arm}</td>") :].split("</tr>")[0]
        assert f'class="num">{n}</td>' in row and status in row, row

    # the rule is part of the plan: a --resume with another cap is refused, and nothing is touched
    state = (study_dir / "study.json").read_text()
    other = run_cli(token_cache, *[a if a != "3" else "4" for a in args], "--resume", timeout=120)
    assert other.returncode == 2 and "--max-seeds 3, not --max-seeds 4" in other.stderr, other.stderr
    assert (study_dir / "study.json").read_text() == state
