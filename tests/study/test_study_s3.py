"""A study whose --output is a cloud URI, against a real S3-compatible server (moto's, on 127.0.0.1): Tune's
state and checkpoints, every trial's files and the study's results land in the bucket and nowhere else; a
crash and --resume continue from the checkpoints in the bucket; --fetch brings the study back for the
report; bad URIs exit 2 with one line and write nothing. The bucket is read back with boto3, not with the
pyarrow code under test."""

import io
import json
import time
from pathlib import Path

import pandas as pd
import pytest
from study_cli import ROOT, SMOKE, crash, experiment_trials, run_cli, start_cli

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

SECRET = "s3cr3t-9f2c-never-in-results"  # the server accepts any key; this one must show up in no object


@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("moto", reason="moto (the dev extra) runs the S3-compatible server")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = dict(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_ACCESS_KEY_ID="test-key-id",
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id="test-key-id",
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="lab")
    yield env, client
    server.stop()


def keys(client, prefix: str) -> list[str]:
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="lab", Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def read(client, key: str) -> bytes:
    return client.get_object(Bucket="lab", Key=key)["Body"].read()


def driver_log(client, prefix: str) -> str:
    """The tail of the study's driver.log in the bucket (Tune's tracebacks), for a failure message."""
    try:
        return "\ndriver.log:\n" + read(client, prefix + "driver.log").decode(errors="replace")[-6000:]
    except Exception as e:  # the log is what we want to see; its absence is itself worth saying
        return f"\n(no driver.log: {e})"


def metrics(client, key: str) -> list[dict]:
    return [json.loads(l) for l in read(client, key).decode().splitlines() if l.strip()]


def tune_state(client, prefix: str, dest: Path) -> dict:
    """Tune's saved experiment state in the bucket (what a --resume restores): name -> (status, checkpoint)."""
    states = sorted(k for k in keys(client, prefix) if k.rsplit("/", 1)[-1].startswith("experiment_state-"))
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*"):
        old.unlink()
    if states:
        (dest / states[-1].rsplit("/", 1)[-1]).write_bytes(read(client, states[-1]))
    return experiment_trials(dest)


# ----------------------------------------------------------------------------- a grid study into a bucket


@pytest.fixture(scope="module")
def grid(s3, token_cache, tmp_path_factory):
    env, client = s3
    cwd_results = ROOT / "results" / "nanohead_grid"
    before = sorted(cwd_results.rglob("*")) if cwd_results.exists() else None
    proc = run_cli(
        token_cache,
        "nanohead_grid",
        "--profile",
        "smoke",
        "--output",
        "s3://lab/results",
        "--set",
        "nanohead_proportion=0.0,0.4",
        "--wandb",
        "offline",
        env=env,
        timeout=600,
    )
    after = sorted(cwd_results.rglob("*")) if cwd_results.exists() else None
    return proc, before == after


def test_grid_into_a_bucket_exits_0(grid):
    proc, local_untouched = grid
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "s3://lab/results/nanohead_grid/trials.parquet" in proc.stdout
    assert local_untouched  # the default results/ was not written


def test_grid_files_are_in_the_bucket(grid, s3):
    env, client = s3
    names = ["nanohead_p00_d2", "nanohead_p40_d2"]
    found = set(keys(client, "results/nanohead_grid/"))
    top = {k.split("/", 2)[2] for k in found if k.count("/") == 2}
    assert {"study.json", "trials.parquet", "trials.csv", "report.html"} <= top, top
    for n in names:
        trial = f"results/nanohead_grid/trials/{n}/"
        assert {trial + f for f in ("metrics.jsonl", "config.json", "trial_config.json", "env.json")} <= found
        assert any(k.startswith(trial + "code/trainables/model/") for k in found)  # the code snapshot
        tune_dir = f"results/nanohead_grid/tune/{n}/"
        assert any(k.startswith(tune_dir + "checkpoint_") for k in found), n  # Tune's checkpoints
    assert "results/nanohead_grid/tune/tuner.pkl" in found
    assert any(k.startswith("results/nanohead_grid/wandb/") for k in found)  # offline runs


def test_grid_rows_are_the_runs_own_metrics(grid, s3):
    env, client = s3
    df = pd.read_parquet(io.BytesIO(read(client, "results/nanohead_grid/trials.parquet")))
    assert sorted(df["trial"]) == ["nanohead_p00_d2", "nanohead_p40_d2"]
    assert list(df["status"]) == ["done", "done"]
    for _, row in df.iterrows():
        logged = metrics(client, f"results/nanohead_grid/trials/{row['trial']}/metrics.jsonl")
        assert [m["step"] for m in logged] == [10, 20, 30]
        assert row["val_bpb"] == logged[-1]["val_bpb"]
        assert row["best_val_bpb"] == min(m["val_bpb"] for m in logged)
        assert row["tokens_trained"] == SMOKE["max_steps"] * SMOKE["batch_size"] * SMOKE["seq_len"]
    meta = json.loads(read(client, "results/nanohead_grid/study.json"))
    assert meta["args"]["output"] == "s3://lab/results" and meta["interrupted"] is False


def test_no_secret_in_any_object(grid, s3):
    env, client = s3
    for key in keys(client, "results/"):
        assert SECRET.encode() not in read(client, key), key


def test_fetch_brings_the_study_back_for_the_report(grid, s3, token_cache, tmp_path):
    env, client = s3
    proc = run_cli(
        token_cache,
        "nanohead_grid",
        "--fetch",
        "--output",
        "s3://lab/results",
        "--dest",
        tmp_path,
        env=env,
        module="study.submit",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    local = tmp_path / "nanohead_grid"
    assert (local / "trials.parquet").read_bytes() == read(client, "results/nanohead_grid/trials.parquet")
    report = run_cli(token_cache, local, "--no-png", module="reports.build", timeout=300)
    assert report.returncode == 0, report.stderr
    assert (local / "report.html").stat().st_size > 0


def test_rerun_without_resume_refuses_and_writes_nothing(grid, s3, token_cache):
    env, client = s3
    before = {k: read(client, k) for k in keys(client, "results/nanohead_grid/") if "/checkpoint_" not in k}
    proc = run_cli(
        token_cache,
        "nanohead_grid",
        "--profile",
        "smoke",
        "--output",
        "s3://lab/results",
        "--set",
        "nanohead_proportion=0.0,0.4",
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "s3://lab/results/nanohead_grid already holds a run" in proc.stderr and "--resume" in proc.stderr
    assert {k: read(client, k) for k in keys(client, "results/nanohead_grid/") if "/checkpoint_" not in k} == before


# ----------------------------------------------------------------------------- bad URIs


@pytest.mark.parametrize(
    "output,says",
    [
        ("nosuchfs://lab/results", "nosuchfs"),
        ("s3:///results", "bucket"),
        ("s3://no-such-bucket/results", "no-such-bucket"),
        ("s3://someone:hunter2@lab/results", "environment"),
    ],
)
def test_bad_output_uri_exits_2_with_one_line(s3, token_cache, output, says):
    env, client = s3
    before = keys(client, "")
    proc = run_cli(token_cache, "nanohead_grid", "--profile", "smoke", "--output", output, env=env, timeout=120)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: --output"), proc.stderr
    assert says in lines[0] and "Traceback" not in proc.stderr and "hunter2" not in proc.stderr
    assert keys(client, "") == before


# ----------------------------------------------------------------------------- a crash, then --resume


def test_crash_then_resume_from_the_bucket(s3, token_cache, tmp_path):
    """SIGKILL the driver and all its Ray processes once Tune's state in the bucket holds a finished trial and a
    running one with a checkpoint; --resume (the staging folder is gone with the 'machine', the bucket is all
    that is left) finishes the study: every trial once, the finished ones not rerun, the running one continued
    from its checkpoint in the bucket."""
    import shutil
    import tempfile

    env, client = s3
    steps, every = 60, 10
    prefix = "crash/nanohead_grid/"
    args = [
        "nanohead_grid",
        "--profile",
        "smoke",
        "--output",
        "s3://lab/crash",
        "--wandb",
        "disabled",
        "--no-report",
        "--set",
        "nanohead_proportion=0.0,0.2,0.4",
        "--set",
        f"max_steps={steps}",
        "--set",
        f"eval_every={every}",
    ]
    names = [f"nanohead_p{pct:02d}_d2" for pct in (0, 20, 40)]
    all_steps = list(range(every, steps + 1, every))

    log = tmp_path / "first.log"
    proc = start_cli(token_cache, *args, log=log, env=env)
    try:
        deadline = time.time() + 420
        while True:
            assert proc.poll() is None, "the study ended before the crash:\n" + log.read_text()[-3000:]
            assert time.time() < deadline, "the awaited state never came:\n" + log.read_text()[-3000:]
            state = tune_state(client, prefix + "tune/", tmp_path / "state")
            done = [n for n, (s, _) in state.items() if s == "TERMINATED"]
            running = [n for n, (s, c) in state.items() if s == "RUNNING" and c]
            pushed = set(keys(client, prefix + "trials/"))  # a report's metrics go up right after it
            if done and running and all(f"{prefix}trials/{n}/metrics.jsonl" in pushed for n in done + running):
                break
            time.sleep(0.5)
        before = {n: read(client, f"{prefix}trials/{n}/metrics.jsonl") for n in done + running}
    finally:
        crash(proc)
    for leftover in (
        Path(tempfile.gettempdir()) / "nanostudies-staging",
        Path(tempfile.gettempdir()) / "nanostudies-trials",
    ):
        shutil.rmtree(leftover, ignore_errors=True)  # the machine is gone: only the bucket is left
    print(f"crashed with {done} finished and {running} running (Tune's saved state)")

    resumed = run_cli(token_cache, *args, "--resume", env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:] + driver_log(client, prefix)
    assert "resuming s3://lab/crash/nanohead_grid/tune" in resumed.stdout
    df = pd.read_parquet(io.BytesIO(read(client, prefix + "trials.parquet")))
    assert sorted(df["trial"]) == names and list(df["status"]) == ["done"] * 3, df[["trial", "status", "error"]]
    for n in names:
        assert [m["step"] for m in metrics(client, f"{prefix}trials/{n}/metrics.jsonl")] == all_steps, n
    for n in done:  # finished before the crash: not run again
        assert read(client, f"{prefix}trials/{n}/metrics.jsonl") == before[n], n
    for n in running:  # continued from its checkpoint: the evals before it are the first run's own lines
        first = before[n].decode().splitlines()[0]
        assert read(client, f"{prefix}trials/{n}/metrics.jsonl").decode().splitlines()[0] == first, n
    meta = json.loads(read(client, prefix + "study.json"))
    assert meta["interrupted"] is False and meta["args"]["resume"] is True


# ----------------------------------------------------------------------------- a DDP trial (Ray Train) into a bucket


def test_ddp_trial_writes_through_its_rank_0_worker(s3, token_cache):
    """Two Ray Train workers per trial: Train's checkpoints go to the bucket's train/, and rank 0 (which may run
    on any node) pushes the trial's metrics after every eval."""
    env, client = s3
    proc = run_cli(
        token_cache,
        "nanohead_grid",
        "--profile",
        "smoke",
        "--output",
        "s3://lab/ddp",
        "--wandb",
        "disabled",
        "--no-report",
        "--set",
        "nanohead_proportion=0.0",
        "--workers-per-trial",
        "2",
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logged = metrics(client, "ddp/nanohead_grid/trials/nanohead_p00_d2/metrics.jsonl")
    assert [m["step"] for m in logged] == [10, 20, 30]
    assert logged[-1]["tokens"] == 2 * SMOKE["max_steps"] * SMOKE["batch_size"] * SMOKE["seq_len"]  # two ranks
    assert all(m["param_sync_err"] == 0 for m in logged)
    assert any("/checkpoint_" in k for k in keys(client, "ddp/nanohead_grid/train/nanohead_p00_d2/"))
    df = pd.read_parquet(io.BytesIO(read(client, "ddp/nanohead_grid/trials.parquet")))
    assert list(df["status"]) == ["done"] and df["val_bpb"].iloc[0] == logged[-1]["val_bpb"]


# ----------------------------------------------------------------------------- one driver per study, private staging


def test_a_driver_holding_the_bucket_study_refuses_a_second(s3, token_cache, monkeypatch):
    from study.lock import StudyLock

    env, client = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    lock = StudyLock("s3://lab/locked/nanohead_grid")  # this test process is the running driver
    lock.acquire()
    try:
        holder = json.loads(read(client, "locked/nanohead_grid/.lock"))
        for extra in ([], ["--resume"]):
            proc = run_cli(
                token_cache,
                "nanohead_grid",
                "--profile",
                "smoke",
                "--output",
                "s3://lab/locked",
                *extra,
                env=env,
                timeout=120,
            )
            (line,) = proc.stderr.strip().splitlines()
            assert proc.returncode == 2 and "is being run by another driver" in line, proc.stderr
            assert f"pid {holder['pid']} on {holder['host']}, started {holder['started']}" in line
        assert keys(client, "locked/") == ["locked/nanohead_grid/.lock"]  # nothing else written
        assert json.loads(read(client, "locked/nanohead_grid/.lock"))["token"] == lock.token
    finally:
        lock.release()
    assert [k for k in keys(client, "locked/") if not k.endswith("/")] == []  # pyarrow may leave a folder marker


def test_each_run_stages_in_a_private_folder_of_its_own(grid, s3, monkeypatch):
    from study.results import StudyStorage

    env, client = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    first = StudyStorage.open("s3://lab/results", "nanohead_grid")
    second = StudyStorage.open("s3://lab/results", "nanohead_grid")
    assert first.local != second.local
    for staged in (first, second):
        assert staged.local.parent.stat().st_mode & 0o777 == 0o700
        assert json.loads((staged.local / "study.json").read_text())["study"] == "nanohead_grid"
    first.discard()  # what a refused second driver does: only its own folder goes
    assert not first.local.parent.exists()
    assert json.loads((second.local / "study.json").read_text())["study"] == "nanohead_grid"
    second.discard()
