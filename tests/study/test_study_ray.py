"""End to end on a local Ray cluster, through the CLI as a user types it: a grid study and its output
format, a crash and --resume, an Optuna search extended later. Each CLI run starts its own local Ray
(2 CPUs here), so the runs are few and shared across assertions (module fixtures)."""

import json
import math
import os
import re
import shlex
import shutil
import signal
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from study_cli import SMOKE, crash, experiment_trials, numel, read_metrics, run_cli, start_cli

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

GRID_NAMES = [f"nanohead_p{pct:02d}_d{SMOKE['depth']}" for pct in (0, 20, 40, 60, 80)]
SMOKE_TOKENS = SMOKE["max_steps"] * SMOKE["batch_size"] * SMOKE["seq_len"]  # 30 x 8 x 64, one worker
ROW_COLUMNS = [
    "trial",
    "study",
    "variant",
    "seed",
    "status",
    "error",
    "params_total",
    "params_non_embedding",
    "params_embedding",
    "params_lm_head",
    "flops_per_token",
    "tokens_trained",
    "train_loss",
    "val_loss",
    "val_bpb",
    "best_val_bpb",
    "tokens_per_s",
    "mfu",
    "wall_s",
]


def reports_available() -> bool:
    try:
        import reports.build  # noqa: F401

        return True
    except ImportError:
        return False


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ----------------------------------------------------------------------------- the main grid study, once


@pytest.fixture(scope="module")
def grid(token_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    args = ["nanohead_grid", "--profile", "smoke", "--output", out, "--wandb", "offline"]
    if not reports_available():
        args.append("--no-report")
    proc = run_cli(token_cache, *args, timeout=600)
    return proc, out / "nanohead_grid"


def test_grid_study_exits_0(grid):
    proc, study_dir = grid
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_grid_rows_one_per_trial_all_done(grid):
    proc, study_dir = grid
    df = pd.read_parquet(study_dir / "trials.parquet")
    csv = pd.read_csv(study_dir / "trials.csv")
    assert sorted(df["trial"]) == GRID_NAMES
    assert sorted(csv["trial"]) == GRID_NAMES
    assert list(df["status"]) == ["done"] * 5, df[["trial", "status", "error"]]
    assert df["error"].isna().all()
    for column in ROW_COLUMNS:
        assert column in df.columns, column
    for key in (
        "nanohead_proportion",
        "nanohead_dim",
        "n_layer",
        "n_embd",
        "n_head",
        "vocab_size",
        "lr",
        "seq_len",
        "seed",
    ):
        assert key in df.columns, key  # every config key
    assert set(df["study"]) == {"nanohead_grid"}
    assert sorted(df["variant"]) == ["p00", "p20", "p40", "p60", "p80"]
    assert sorted(df["nanohead_proportion"]) == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert set(df["nanohead_dim"]) == {3} and set(df["n_layer"]) == {SMOKE["depth"]}
    csv_bpb = dict(zip(csv["trial"], csv["val_bpb"]))
    for _, row in df.iterrows():
        assert csv_bpb[row["trial"]] == pytest.approx(row["val_bpb"], rel=1e-9)


def test_grid_metrics_are_the_runs_own(grid):
    """val_bpb is there and finite (the note's collector read another name and came out empty), and equals
    what the trial itself logged; best <= final; every trial trained the smoke budget's tokens."""
    proc, study_dir = grid
    df = pd.read_parquet(study_dir / "trials.parquet").set_index("trial")
    for name, row in df.iterrows():
        logged = read_metrics(study_dir / "trials" / name / "metrics.jsonl")
        assert [m["step"] for m in logged] == [10, 20, 30]  # 3 evals
        for key in ("val_bpb", "best_val_bpb", "val_loss", "train_loss", "tokens_per_s", "mfu", "wall_s"):
            assert finite(row[key]), (name, key, row[key])
        assert row["val_bpb"] == pytest.approx(logged[-1]["val_bpb"], rel=1e-12)
        assert row["best_val_bpb"] == pytest.approx(min(m["val_bpb"] for m in logged), rel=1e-12)
        assert row["best_val_bpb"] <= row["val_bpb"]
        assert 0 < row["val_bpb"] < 10 and row["val_loss"] > 0
        assert row["tokens_trained"] == SMOKE_TOKENS
        assert row["wall_s"] > 0 and row["tokens_per_s"] > 0


def test_grid_params_are_the_models_own(grid):
    """Parameter columns against a GPT built here from the row's own dims; all five equal (param-matched)."""
    proc, study_dir = grid
    df = pd.read_parquet(study_dir / "trials.parquet")
    assert df["params_total"].nunique() == 1
    for _, row in df.iterrows():
        real = numel(
            vocab_size=int(row["vocab_size"]),
            n_layer=int(row["n_layer"]),
            n_embd=int(row["n_embd"]),
            n_head=int(row["n_head"]),
            seq_len=int(row["seq_len"]),
            nanohead_proportion=float(row["nanohead_proportion"]),
            nanohead_dim=int(row["nanohead_dim"]),
        )
        assert row["params_total"] == real["total"]
        embedding = row["vocab_size"] * row["n_embd"]
        assert row["params_embedding"] == embedding and row["params_lm_head"] == embedding  # untied
        assert row["params_non_embedding"] == row["params_total"] - embedding
        C, L, T = row["n_embd"], row["n_layer"], row["seq_len"]
        assert row["flops_per_token"] == 6 * row["params_non_embedding"] + 12 * L * C * T


def test_grid_study_json(grid):
    proc, study_dir = grid
    meta = json.loads((study_dir / "study.json").read_text())
    assert meta["study"] == "nanohead_grid" and meta["profile"] == "smoke"
    assert meta["args"]["wandb"] == "offline" and meta["args"]["profile"] == "smoke"
    assert Path(meta["args"]["output"]) == study_dir.parent
    for pkg in ("torch", "ray", "optuna", "pandas"):
        assert meta["versions"].get(pkg), pkg
    assert meta["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", meta["git_commit"])
    start, end = datetime.fromisoformat(meta["started"]), datetime.fromisoformat(meta["ended"])
    assert start < end
    assert meta["interrupted"] is False


def test_grid_trial_directories(grid):
    proc, study_dir = grid
    assert sorted(p.name for p in (study_dir / "trials").iterdir()) == GRID_NAMES
    for name in GRID_NAMES:
        trial = study_dir / "trials" / name
        env = json.loads((trial / "env.json").read_text())
        assert env["versions"]["torch"] and env["python"]
        config = json.loads((trial / "config.json").read_text())
        assert config["model"]["n_layer"] == SMOKE["depth"]
        assert (trial / "code" / "trainables" / "train.py").is_file()  # the code that trained it
        assert any((trial / "code" / "trainables" / "model").glob("*.py"))
    assert any(study_dir.glob("tune*/experiment_state-*.json")) and any(study_dir.glob("tune*/tuner.pkl"))


def test_grid_wandb_offline_runs_in_the_study_dir(grid):
    proc, study_dir = grid
    runs = [p for p in study_dir.rglob("offline-run-*") if p.is_dir()]
    assert len(runs) == 5, runs
    assert all(any(run.glob("*.wandb")) for run in runs)


def test_grid_live_progress(grid):
    proc, study_dir = grid
    lines = proc.stdout.splitlines()
    progress = [l for l in lines if re.search(r"\d+/5 done", l)]
    assert progress
    assert any("5/5 done (0 failed)" in l for l in progress)
    assert any("running" in l and "pending" in l for l in progress)
    assert any("best val_bpb" in l for l in progress) and any("elapsed" in l for l in progress)
    assert any("ETA" in l for l in progress)
    done_counts = [int(re.search(r"(\d+)/5 done", l).group(1)) for l in progress]
    assert done_counts == sorted(done_counts)  # counts only go up
    best = [float(m.group(1)) for l in progress if (m := re.search(r"best val_bpb ([0-9.]+)", l))]
    df = pd.read_parquet(study_dir / "trials.parquet")
    assert best[-1] == pytest.approx(df["best_val_bpb"].min(), abs=1e-4)  # the best so far, at the end: the best


def test_grid_report(grid):
    proc, study_dir = grid
    if not reports_available():
        pytest.skip("reports.build is not importable: the run used --no-report")
    assert (study_dir / "report.html").is_file()


def test_grid_rerun_without_resume_refuses_to_overwrite(grid, token_cache):
    proc, study_dir = grid
    before = {p: p.stat().st_mtime_ns for p in [study_dir / "trials.parquet", study_dir / "study.json"]}
    again = run_cli(
        token_cache, "nanohead_grid", "--profile", "smoke", "--output", study_dir.parent, "--wandb", "disabled"
    )
    lines = [l for l in again.stderr.splitlines() if l.strip()]
    assert again.returncode == 2 and len(lines) == 1 and "--resume" in lines[0], again.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before


@pytest.mark.parametrize(
    "changed",
    [
        ["--profile", "cpu"],
        ["--set", "lr=0.01"],
        ["--workers-per-trial", "2"],
        ["--ray-train"],
        ["--cpus-per-worker", "2"],
    ],
    ids=["profile", "set", "workers", "ray_train", "cpus"],
)
def test_resume_with_other_options_is_refused(grid, token_cache, changed):
    """--resume continues the study that was started: another profile or --set would be ignored by the restored
    trials (or mix two plans), other resources would rerun them from step 0 or fail on the world size, so it is an
    error naming what differs, and nothing is touched. (More seeds are allowed: tests/study/test_study_plan_ray.py.)"""
    proc, study_dir = grid
    before = {p: p.stat().st_mtime_ns for p in study_dir.rglob("*") if p.is_file()}
    again = run_cli(
        token_cache,
        "nanohead_grid",
        "--profile",
        "smoke",
        *changed,
        "--output",
        study_dir.parent,
        "--wandb",
        "disabled",
        "--resume",
    )
    lines = [l for l in again.stderr.splitlines() if l.strip()]
    assert again.returncode == 2 and len(lines) == 1, again.stderr
    assert "--resume" in lines[0] and changed[0] in lines[0] and "started with" in lines[0], lines[0]
    assert {p: p.stat().st_mtime_ns for p in study_dir.rglob("*") if p.is_file()} == before


def test_failed_trials_are_rows_with_their_reason(token_cache, tmp_path):
    """A diverging trial is a result: a row with status failed and the reason in one line, not a traceback. A study
    whose every trial failed exits 1, saying so in one line."""
    proc = run_cli(
        token_cache,
        "nanohead_grid",
        "--profile",
        "smoke",
        "--output",
        tmp_path,
        "--wandb",
        "disabled",
        "--no-report",
        "--set",
        "nanohead_proportion=0.0,0.2",
        "--set",
        "lr=1e30",
        "--set",
        "max_steps=10",
        "--set",
        "eval_every=5",
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: every trial failed (2 of 2); the first reason: ") and "nan" in line.lower(), line
    df = pd.read_parquet(tmp_path / "nanohead_grid" / "trials.parquet")
    assert sorted(df["trial"]) == ["nanohead_p00_d2", "nanohead_p20_d2"]
    assert list(df["status"]) == ["failed", "failed"]
    for error in df["error"]:
        assert "nan" in error.lower() and "\n" not in error and "Traceback" not in error, error
    assert any("2/2 done (2 failed)" in l for l in proc.stdout.splitlines())


# ----------------------------------------------------------------------------- Ctrl-C, a crash, then --resume


def wait_for_state(proc, study_dir: Path, log: Path, condition, timeout: float = 420) -> dict:
    """Polls Tune's saved experiment state (what a --resume restores) until condition(state) holds."""
    deadline = time.time() + timeout
    while True:
        assert proc.poll() is None, "the study ended before it could be interrupted:\n" + log.read_text()[-3000:]
        assert time.time() < deadline, "the awaited state never came:\n" + log.read_text()[-3000:]
        state = experiment_trials(study_dir / "tune")
        if condition(state):
            return state
        time.sleep(0.5)


def test_ctrl_c_then_crash_then_resume(token_cache, tmp_path):
    """1. Ctrl-C (SIGINT to the foreground process group, as a terminal sends it) once a trial has a checkpoint:
    a clean stop, exit 130, a resumable study and the command to resume it. 2. That command, killed with
    SIGKILL together with all its Ray processes (a reboot) once Tune's saved state holds a finished trial and
    a running one with a checkpoint. 3. --resume finishes the study: every trial once, finished ones not run
    again, the running one continued from its checkpoint (not retrained from step 0)."""
    steps, every = 60, 10
    args = [
        "nanohead_grid",
        "--profile",
        "smoke",
        "--output",
        tmp_path,
        "--wandb",
        "disabled",
        "--no-report",
        "--set",
        "nanohead_proportion=0.0,0.2,0.4,0.6",
        "--set",
        f"max_steps={steps}",
        "--set",
        f"eval_every={every}",
    ]
    names = [f"nanohead_p{pct:02d}_d2" for pct in (0, 20, 40, 60)]
    all_steps = list(range(every, steps + 1, every))
    study_dir = tmp_path / "nanohead_grid"

    # 1. Ctrl-C
    log = tmp_path / "first.log"
    proc = start_cli(token_cache, *args, log=log)
    try:
        wait_for_state(proc, study_dir, log, lambda st: any(s == "RUNNING" and c for s, c in st.values()))
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=180)
    finally:
        crash(proc)  # whatever a clean stop left behind (nothing, if it was clean)
    text = log.read_text()
    assert code == 130, text[-3000:]
    assert "Traceback" not in text
    assert json.loads((study_dir / "study.json").read_text())["interrupted"] is True
    hint = next(l for l in text.splitlines() if l.startswith("interrupted: continue with"))
    command = shlex.split(hint.split("continue with", 1)[1])
    assert command[:3] == ["python", "-m", "study.run"] and "--resume" in command
    assert "--profile" in command and f"max_steps={steps}" in command  # the same study, not the default one

    # 2. the suggested command, then a crash
    log = tmp_path / "second.log"
    proc = start_cli(token_cache, *command[3:], log=log)
    try:
        state = wait_for_state(
            proc,
            study_dir,
            log,
            lambda st: (
                any(s == "TERMINATED" for s, _ in st.values()) and any(s == "RUNNING" and c for s, c in st.values())
            ),
        )
        done = [n for n, (s, _) in state.items() if s == "TERMINATED"]
        running = [n for n, (s, c) in state.items() if s == "RUNNING" and c]
        before = {n: (study_dir / "trials" / n / "metrics.jsonl").read_text() for n in done + running}
        mtimes = {n: (study_dir / "trials" / n / "metrics.jsonl").stat().st_mtime_ns for n in done}
    finally:
        crash(proc)
    assert "resuming" in log.read_text()
    print(f"crashed with {done} finished and {running} running (Tune's saved state)")
    for n in done:
        assert [m["step"] for m in read_metrics(study_dir / "trials" / n / "metrics.jsonl")] == all_steps

    # 3. resume to the end
    resumed = run_cli(token_cache, *args, "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    df = pd.read_parquet(study_dir / "trials.parquet")
    assert sorted(df["trial"]) == names  # every trial exactly once
    assert list(df["status"]) == ["done"] * 4, df[["trial", "status", "error"]]
    assert (df["tokens_trained"] == steps * SMOKE["batch_size"] * SMOKE["seq_len"]).all()
    assert sorted(p.name for p in (study_dir / "trials").iterdir()) == names
    for n in done:  # finished before the crash: not run again
        path = study_dir / "trials" / n / "metrics.jsonl"
        assert path.read_text() == before[n] and path.stat().st_mtime_ns == mtimes[n], n
    for n in names:
        logged = read_metrics(study_dir / "trials" / n / "metrics.jsonl")
        assert [m["step"] for m in logged] == all_steps, n  # complete, no step twice
    for n in running:  # continued from its checkpoint: the evals up to it are still the earlier run's own lines
        first_line_before = before[n].splitlines()[0]
        assert (study_dir / "trials" / n / "metrics.jsonl").read_text().splitlines()[0] == first_line_before, n
    meta = json.loads((study_dir / "study.json").read_text())
    assert meta["interrupted"] is False and meta["args"]["resume"] is True


def test_resume_when_tunes_state_names_a_deleted_checkpoint(token_cache, tmp_path):
    """Tune keeps the newest 2 checkpoints and saves its state every few seconds: a crash between a deletion and
    the next save leaves a state naming a checkpoint that is gone, and Tune then failed the trial ('Could not
    recover from checkpoint', seen in CI). Here the named checkpoint is removed by hand after a crash: the
    trial continues from the newest checkpoint still in storage, not from step 0 and not as a failure."""
    steps, every = 60, 10
    args = [
        "nanohead_grid",
        "--profile",
        "smoke",
        "--output",
        tmp_path,
        "--wandb",
        "disabled",
        "--no-report",
        "--set",
        "nanohead_proportion=0.0",
        "--set",
        f"max_steps={steps}",
        "--set",
        f"eval_every={every}",
    ]
    study_dir = tmp_path / "nanohead_grid"
    log = tmp_path / "first.log"
    proc = start_cli(token_cache, *args, log=log)
    try:
        state = wait_for_state(
            proc,
            study_dir,
            log,
            lambda st: any(s == "RUNNING" and c and c != "checkpoint_000000" for s, c in st.values()),
        )
    finally:
        crash(proc)
    ((name, (_, named)),) = [(n, v) for n, v in state.items() if v[0] == "RUNNING"]
    trial_dir = study_dir / "tune" / name
    # Tune may have deleted it already (the very race this stands for): either way the state names a checkpoint that is gone
    shutil.rmtree(trial_dir / named, ignore_errors=True)
    assert not (trial_dir / named).exists()
    assert any(trial_dir.glob("checkpoint_*")), "no older checkpoint left to continue from"
    before = (study_dir / "trials" / name / "metrics.jsonl").read_text().splitlines()[0]

    resumed = run_cli(token_cache, *args, "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    df = pd.read_parquet(study_dir / "trials.parquet")
    assert list(df["status"]) == ["done"], df[["trial", "status", "error"]]
    metrics = study_dir / "trials" / name / "metrics.jsonl"
    assert [m["step"] for m in read_metrics(metrics)] == list(range(every, steps + 1, every))
    assert metrics.read_text().splitlines()[0] == before  # continued: the first evals are the first run's own


# ----------------------------------------------------------------------------- Optuna: a search, extended later


def optuna_trials(db: Path):
    import optuna

    return optuna.load_study(study_name="nanohead_search", storage=f"sqlite:///{db}")


def test_optuna_search_extended_with_more_trials(token_cache, tmp_path):
    args = [
        "nanohead_search",
        "--profile",
        "smoke",
        "--num-samples",
        2,
        "--output",
        tmp_path,
        "--wandb",
        "disabled",
        "--no-report",
    ]
    study_dir = tmp_path / "nanohead_search"
    first = run_cli(token_cache, *args, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    db = study_dir / "optuna.db"  # the default storage
    assert db.is_file()
    assert len(optuna_trials(db).trials) == 2
    assert len(pd.read_parquet(study_dir / "trials.parquet")) == 2

    second = run_cli(token_cache, *args, "--resume", timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    study = optuna_trials(db)
    assert len(study.trials) == 4  # the same Optuna study, two more trials
    assert len(study.directions) == 1
    assert (study_dir / "tune_2" / "tuner.pkl").is_file()  # a new Tune experiment
    df = pd.read_parquet(study_dir / "trials.parquet")
    assert len(df) == 4 and df["trial"].is_unique
    assert set(df["status"]) <= {"done", "stopped"}  # ASHA may stop a trial early
    assert df["val_bpb"].map(finite).all()
    # the extension drew new configs, not the first run's again
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 4
    for key in ("nanohead_proportion", "nanohead_dim", "n_layer", "lr"):
        assert df[key].notna().all()
    # the rows' configs are the ones Optuna suggested
    suggested = sorted(round(t.params["nanohead_proportion"], 9) for t in study.trials)
    assert sorted(round(x, 9) for x in df["nanohead_proportion"]) == suggested


def test_optuna_multi_objective_in_a_given_storage(token_cache, tmp_path):
    """--set objective=multi: NSGA-II over (val_bpb, params_total); --storage puts the study where it says."""
    db = tmp_path / "elsewhere" / "search.db"
    db.parent.mkdir()
    proc = run_cli(
        token_cache,
        "nanohead_search",
        "--profile",
        "smoke",
        "--num-samples",
        2,
        "--output",
        tmp_path / "out",
        "--wandb",
        "disabled",
        "--no-report",
        "--set",
        "objective=multi",
        "--storage",
        f"sqlite:///{db}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = optuna_trials(db)
    assert len(study.directions) == 2
    assert len(study.trials) == 2
    assert all(t.values is None or len(t.values) == 2 for t in study.trials)
    assert not (tmp_path / "out" / "nanohead_search" / "optuna.db").exists()
    df = pd.read_parquet(tmp_path / "out" / "nanohead_search" / "trials.parquet")
    assert len(df) == 2 and df["trial"].is_unique
    meta = json.loads((tmp_path / "out" / "nanohead_search" / "study.json").read_text())
    assert meta["args"]["storage"] == f"sqlite:///{db}"


def test_a_failure_after_the_trials_is_one_line_and_loses_nothing(token_cache, tmp_path):
    """Writing the results fails (here trials.parquet is a folder in the way): the trials' own files stay, the
    terminal gets one line naming the log, driver.log the traceback, and the exit status is 1."""
    study_dir = tmp_path / "nanohead_grid"
    (study_dir / "trials.parquet").mkdir(parents=True)
    proc = run_cli(
        token_cache,
        "nanohead_grid",
        "--profile",
        "smoke",
        "--output",
        tmp_path,
        "--wandb",
        "disabled",
        "--no-report",
        "--set",
        "nanohead_proportion=0.0",
        "--set",
        "max_steps=10",
        "--set",
        "eval_every=5",
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: the study stopped: IsADirectoryError") and str(study_dir / "driver.log") in line
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Traceback" in (study_dir / "driver.log").read_text()
    assert [m["step"] for m in read_metrics(study_dir / "trials" / "nanohead_p00_d2" / "metrics.jsonl")] == [5, 10]
    assert not (study_dir / ".lock").exists()
