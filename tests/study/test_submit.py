"""study.submit against a real Ray head (`ray start --head`, token auth on, as Ray 2.60 runs clusters).

The head is this module's own: its processes carry a unique environment marker, and teardown ends
exactly those (never `ray stop`, which would end every Ray instance of this user on the machine).
What the job did is read back through Ray's own Jobs API and from the files on disk, not from
submit's output.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

PROJECT = Path(__file__).resolve().parents[2]
MARKER = "NANOSTUDIES_TEST_RAY_HEAD"
FAKE_SECRET = "wandb-key-that-must-not-travel-0123456789"
SMOKE = ["--profile", "smoke", "--wandb", "disabled", "--no-report", "--set", "max_steps=10", "--set", "eval_every=5"]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _marked_pids(marker: str) -> list[int]:
    """Processes of this user whose environment holds MARKER=marker: the head and all it started."""
    needle, own = f"{MARKER}={marker}".encode(), os.getpid()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int(proc.name) != own and needle in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _end_head(marker: str):
    pids = _marked_pids(marker)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.5)
    for pid in pids + _marked_pids(marker):
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Head:
    def __init__(self, url: str, root: Path, env: dict):
        self.url, self.root, self.env = url, root, env

    def submit(self, *args, env=None, timeout=60):
        """python -m study.submit ARGS as a user would type it, with this head's token."""
        return subprocess.run(
            [sys.executable, "-m", "study.submit", *args],
            cwd=PROJECT,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def jobs(self) -> dict:
        """The reference: Ray's own Jobs API, read in a separate process (job id -> info)."""
        code = (
            "import json, sys\nfrom ray.job_submission import JobSubmissionClient\n"
            "jobs = JobSubmissionClient(sys.argv[1]).list_jobs()\n"
            "print(json.dumps({j.submission_id: dict(status=str(j.status), entrypoint=j.entrypoint, "
            "runtime_env=j.runtime_env, metadata=j.metadata) for j in jobs if j.submission_id}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, self.url], env=self.env, capture_output=True, text=True, timeout=60, check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def head(token_cache):
    # A short root: Ray's socket paths live under it and must stay below 107 characters.
    root = Path(tempfile.mkdtemp(prefix="rs_", dir="/tmp"))
    token = root / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    marker = secrets.token_hex(8)
    gcs, dashboard, client_server, agent = _free_ports(4)
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE", MARKER)
    }
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    # TMPDIR: Ray's default temp dir becomes ROOT/ray, so the head's ray_current_cluster file sits where
    # the job's `study.run --address auto` (which inherits TMPDIR from the head) looks for it.
    head_env = {**clean, **auth, "TMPDIR": str(root), MARKER: marker}
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client_server}",
        f"--dashboard-agent-listen-port={agent}",
        "--num-cpus=2",
        '--resources={"train_driver": 2}',
        "--include-dashboard=true",
        f"--temp-dir={root / 'ray'}",
        "--object-store-memory=200000000",
        "--disable-usage-stats",
    ]
    try:
        started = subprocess.run(cmd, env=head_env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stderr[-3000:]
        yield Head(f"http://127.0.0.1:{dashboard}", root, {**clean, **auth, "WANDB_API_KEY": FAKE_SECRET})
    finally:
        _end_head(marker)
        shutil.rmtree(root, ignore_errors=True)


def _one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.ray
def test_submit_follow_status_fetch(head, tmp_path):
    shared, dest = tmp_path / "shared", tmp_path / "fetched"
    proc = head.submit("nanohead_grid", *SMOKE, "--output", str(shared), "--address", head.url, "--follow", timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    job_id = re.search(r"submitted job (\S+)", proc.stdout).group(1)
    assert FAKE_SECRET not in proc.stdout + proc.stderr

    job = head.jobs()[job_id]
    assert job["status"] == "SUCCEEDED"
    assert job["entrypoint"].startswith("python -m study.run nanohead_grid --profile smoke")
    assert job["entrypoint"].endswith("--address auto")
    assert FAKE_SECRET not in json.dumps(job)
    assert job["runtime_env"]["env_vars"]["NANOSTUDIES_CACHE"] == os.environ["NANOSTUDIES_CACHE"]
    # What reached the cluster: the project's code, without .git, caches and build metadata.
    package_name = job["runtime_env"]["working_dir"].rsplit("/", 1)[-1].removesuffix(".zip")
    (package,) = (head.root / "ray").glob(f"session_latest/runtime_resources/working_dir_files/{package_name}")
    assert (package / "study" / "submit.py").read_bytes() == (PROJECT / "study" / "submit.py").read_bytes()
    assert (package / "pyproject.toml").exists()
    assert not {".git", ".pytest_cache", "results"} & {p.name for p in package.iterdir()}
    assert not list(package.glob("*.egg-info"))

    trials = pd.read_parquet(shared / "nanohead_grid" / "trials.parquet")
    assert len(trials) == 5 and set(trials["status"]) == {"done"}
    assert sorted(trials["nanohead_proportion"]) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])

    status = head.submit("--status", job_id, "--address", head.url)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout

    fetched = head.submit("--fetch", job_id, "--address", head.url, "--dest", str(dest))
    assert fetched.returncode == 0, fetched.stderr
    source = shared / "nanohead_grid"
    copied = {p.relative_to(dest / "nanohead_grid") for p in (dest / "nanohead_grid").rglob("*") if p.is_file()}
    assert copied == {p.relative_to(source) for p in source.rglob("*") if p.is_file()}
    pd.testing.assert_frame_equal(pd.read_parquet(dest / "nanohead_grid" / "trials.parquet"), trials)


@pytest.mark.ray
def test_a_study_file_outside_the_project_travels_with_its_job(head, tmp_path):
    """The cluster never saw the file: the job carries its text and runs it by name; the study runs there."""
    study_file = tmp_path / "elsewhere" / "qknorm_ab.toml"
    study_file.parent.mkdir()
    study_file.write_text((PROJECT / "examples" / "qknorm_ab.toml").read_text())
    shared = tmp_path / "shared"
    proc = head.submit(
        str(study_file), "--profile", "smoke", "--output", str(shared), "--address", head.url, "--follow", timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    job = head.jobs()[re.search(r"submitted job (\S+)", proc.stdout).group(1)]
    assert job["entrypoint"].startswith("python -m study.run qknorm_ab.toml --profile smoke")
    assert job["metadata"]["nanostudies.study"] == "qknorm_ab"
    trials = pd.read_parquet(shared / "qknorm_ab" / "trials.parquet")
    assert sorted(trials["qk_norm"]) == [False, True] and set(trials["status"]) == {"done"}
    meta = json.loads((shared / "qknorm_ab" / "study.json").read_text())
    assert meta["study_file"]["text"] == study_file.read_text()


@pytest.mark.ray
def test_bad_input_and_auth_fail_here_without_submitting(head, tmp_path):
    before = set(head.jobs())
    bad_set = head.submit(
        "nanohead_grid", "--profile", "smoke", "--set", "bogus=1", "--output", str(tmp_path), "--address", head.url
    )
    assert bad_set.returncode == 2 and "bogus" in _one_error_line(bad_set)

    no_token_mode = {k: v for k, v in head.env.items() if k != "RAY_AUTH_MODE"}
    refused = head.submit("--status", "nope", "--address", head.url, env=no_token_mode)
    assert refused.returncode == 2 and "RAY_AUTH_MODE=token" in _one_error_line(refused)

    wrong = tmp_path / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    rejected = head.submit(
        "--status", "nope", "--address", head.url, env={**head.env, "RAY_AUTH_TOKEN_PATH": str(wrong)}
    )
    assert rejected.returncode == 2 and "rejected the token" in _one_error_line(rejected)

    unknown = head.submit("--status", "no_such_job", "--address", head.url)
    assert unknown.returncode == 2 and "no_such_job" in _one_error_line(unknown)
    assert set(head.jobs()) == before


# ----------------------------------------------------------------------------- no cluster needed


def _submit(*args):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    return subprocess.run(
        [sys.executable, "-m", "study.submit", *args], cwd=PROJECT, capture_output=True, text=True, timeout=120, env=env
    )


def test_unreachable_address_exits_2_with_one_line(tmp_path):
    proc = _submit("nanohead_grid", "--profile", "smoke", "--output", str(tmp_path), "--address", "http://127.0.0.1:1")
    assert proc.returncode == 2 and "127.0.0.1:1" in _one_error_line(proc)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args,says",
    [
        (["nanohead_grid", "--output", "relative/results"], "absolute path"),
        (["nanohead_grid", "--output", "nosuchfs://bucket/results"], "nosuchfs"),
        (["no_such_study", "--output", "/tmp/x"], "no_such_study"),
        (["nanohead_grid", "--output", "/tmp/x", "--no-such-option"], "--no-such-option"),
        (["nanohead_grid", "--output", "/tmp/x", "--address", "auto"], "dashboard"),
        (["--status"], "--status"),
    ],
)
def test_bad_options_exit_2_before_any_cluster_contact(args, says):
    proc = _submit(*args)
    assert proc.returncode == 2 and says in _one_error_line(proc)


def test_fetch_by_study_copies_a_shared_directory(tmp_path):
    source = tmp_path / "shared" / "nanohead_grid"
    (source / "trials" / "t0").mkdir(parents=True)
    pd.DataFrame({"trial": ["t0"], "val_bpb": [1.5]}).to_parquet(source / "trials.parquet")
    (source / "trials" / "t0" / "metrics.jsonl").write_text('{"step": 10}\n')
    proc = _submit("nanohead_grid", "--fetch", "--output", str(tmp_path / "shared"), "--dest", str(tmp_path / "dest"))
    assert proc.returncode == 0, proc.stderr
    for rel in ("trials.parquet", "trials/t0/metrics.jsonl"):
        assert (tmp_path / "dest" / "nanohead_grid" / rel).read_bytes() == (source / rel).read_bytes()
    missing = _submit("nanohead_grid", "--fetch", "--output", str(tmp_path / "nowhere"), "--dest", str(tmp_path / "d2"))
    assert missing.returncode == 2 and "nowhere" in _one_error_line(missing)


def test_the_job_carries_no_secrets(monkeypatch):
    from study.submit import entrypoint, runtime_env

    monkeypatch.setenv("WANDB_API_KEY", FAKE_SECRET)
    monkeypatch.setenv("RAY_AUTH_TOKEN", FAKE_SECRET)
    monkeypatch.setenv("NANOSTUDIES_CACHE", "/shared/cache")
    env = runtime_env()
    assert FAKE_SECRET not in json.dumps(env) and env["env_vars"]["NANOSTUDIES_CACHE"] == "/shared/cache"
    argv = ["nanohead_grid", "--set", "lr=1e-3,3e-3", "--output", "/shared/my results"]
    import shlex

    assert shlex.split(entrypoint(argv)) == ["python", "-m", "study.run", *argv, "--address", "auto"]


# ----------------------------------------------------------------------------- study.run beside a `ray start` head


def _run_here(cwd: Path, env: dict, *args, timeout=300):
    """python -m study.run ARGS typed in cwd (a fresh folder), with the token cache of the test session."""
    env = {**env, "NANOSTUDIES_CACHE": os.environ["NANOSTUDIES_CACHE"], "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "study.run", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _driver_entrypoints(head) -> list[str]:
    code = (
        "import json, sys\nfrom ray.job_submission import JobSubmissionClient\n"
        "print(json.dumps([j.entrypoint for j in JobSubmissionClient(sys.argv[1]).list_jobs() "
        "if str(j.type).endswith('DRIVER')]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, head.url], env=head.env, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.ray
def test_without_address_a_study_runs_on_a_ray_of_its_own_beside_a_head(head, tmp_path):
    # The user's shell after `ray start --head`: its temp dir holds ray_current_cluster, which a bare ray.init()
    # would join (and then refuse num_cpus). A relative --output, typed in a fresh folder.
    env = {**head.env, "TMPDIR": str(head.root)}
    assert (head.root / "ray" / "ray_current_cluster").exists()
    proc = _run_here(tmp_path, env, "softmax1_ab", "--profile", "smoke", "--output", "out/rel", "--wandb", "disabled")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "runs on a Ray of its own" in proc.stdout
    trials = pd.read_parquet(tmp_path / "out" / "rel" / "softmax1_ab" / "trials.parquet")
    assert sorted(trials["status"]) == ["done", "done"]
    assert (tmp_path / "out" / "rel" / "softmax1_ab" / "report.html").exists()
    assert not any("softmax1_ab --profile smoke --output out/rel" in e for e in _driver_entrypoints(head))


@pytest.mark.ray
def test_address_auto_joins_the_head(head, tmp_path):
    env = {**head.env, "TMPDIR": str(head.root)}
    proc = _run_here(
        tmp_path,
        env,
        "softmax1_ab",
        "--profile",
        "smoke",
        "--output",
        "joined",
        "--wandb",
        "disabled",
        "--no-report",
        "--address",
        "auto",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Ray of its own" not in proc.stdout
    assert any(
        e.endswith("study.run softmax1_ab --profile smoke --output joined --wandb disabled --no-report --address auto")
        for e in _driver_entrypoints(head)
    )
    trials = pd.read_parquet(tmp_path / "joined" / "softmax1_ab" / "trials.parquet")
    assert sorted(trials["status"]) == ["done", "done"]


@pytest.mark.ray
def test_a_stale_cluster_file_left_by_a_crash_is_ignored(token_cache, tmp_path):
    # A crashed `ray start` leaves ray_current_cluster naming an address where nothing listens any more.
    tmp = Path(tempfile.mkdtemp(prefix="rs_", dir="/tmp"))  # short: Ray's socket paths live under it
    (tmp / "ray").mkdir()
    (port,) = _free_ports(1)
    (tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    try:
        proc = _run_here(
            tmp_path,
            {**env, "TMPDIR": str(tmp)},
            "softmax1_ab",
            "--profile",
            "smoke",
            "--output",
            "out",
            "--wandb",
            "disabled",
            "--no-report",
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Ray of its own" not in proc.stdout  # nothing answers there: no note about it
    assert sorted(pd.read_parquet(tmp_path / "out" / "softmax1_ab" / "trials.parquet")["status"]) == ["done", "done"]


@pytest.mark.ray
def test_stop_ends_a_running_job(head, tmp_path):
    # Last of the tests on this head: once (a fresh-clone run on a loaded machine) the stopped job's driver was seen
    # still training minutes later, holding the head's CPUs until the fixture ended it, which starved the study run
    # on the head after it.
    proc = head.submit(
        "nanohead_grid",
        "--profile",
        "smoke",
        "--wandb",
        "disabled",
        "--no-report",
        "--set",
        "max_steps=100000",
        "--set",
        "max_epochs=1000",
        "--output",
        str(tmp_path),
        "--address",
        head.url,
    )
    assert proc.returncode == 0, proc.stderr
    job_id = re.search(r"submitted job (\S+)", proc.stdout).group(1)
    stopped = head.submit("--stop", job_id, "--address", head.url)
    assert stopped.returncode == 0, stopped.stderr
    assert head.jobs()[job_id]["status"] == "STOPPED"
