"""python -m study.submit STUDY [study.run options] [--address URL] [--follow]: run a study on a Ray cluster
through Ray Jobs, then follow, inspect, stop it and fetch its results.

    python -m study.submit nanohead_grid --profile gpu --output /shared/results --follow
    python -m study.submit --status JOB_ID          # or --stop JOB_ID
    python -m study.submit --fetch JOB_ID           # copies OUTPUT/STUDY to results/STUDY (--dest DIR)
    python -m reports.build results/nanohead_grid

The job runs `python -m study.run STUDY <the same options> --address auto` in a copy of this project
(the runtime_env's working_dir) on the cluster's head node. Every study.run option passes through
unchanged and is checked here first, by `python -m study.run ... --dry-run`, so a bad --set fails on
this machine, not on the cluster. --output is a cloud URI (s3://BUCKET/PATH, gs://...: Tune, the trials
and the driver write there through pyarrow.fs, with the credentials of the cluster's nodes) or an
absolute path on storage every node shares (the job's working directory is a temporary copy: a relative
path would be lost with it); --fetch reads it from this machine, a mounted path or the URI.

Authentication (Ray 2.60 clusters run with token auth on): this client sends the cluster's token only
when RAY_AUTH_MODE=token is set here, and reads it from RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH
names, or ~/.ray/auth_token (on the head: `ray get-auth-token`). Secrets never travel with the job:
the runtime_env carries only the code and NANOSTUDIES_CACHE; the cluster's nodes get WANDB_API_KEY and
the like from their own environment.
"""

import argparse
import asyncio
import json
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from study.catalog import STUDIES
from study.files import STUDY_FILE_ENV
from study.run import UsageError, check_folder, redacted_argv
from study.run import build_parser as build_run_parser
from study.run import check_output as check_run_output
from trainables.storage import is_uri, join, open_location

PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# What the job's working_dir leaves out (gitwildmatch, relative to the project; Ray also applies .gitignore).
EXCLUDES = [
    "/results/",
    ".git",
    "__pycache__/",
    "*.pyc",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".hypothesis/",
    ".benchmarks/",
    ".ipynb_checkpoints/",
    "*.egg-info/",
    ".venv/",
    "venv/",
    "/build/",
    "/dist/",
    "node_modules/",
    "wandb/",
    "*.parquet",
    "*.pt",
    "*.ckpt",
    "*.db",
    # secrets never travel with the job (the cluster's job list and its nodes would hold them)
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "credentials",
    "*.credentials",
    ".aws/",
    ".ssh/",
    ".netrc",
    ".pgpass",
    "id_rsa*",
    "id_ed25519*",
    "id_ecdsa*",
    "service-account*.json",
]
UPLOAD_LIMIT = 50 * 2**20  # the dashboard takes up to 100 MiB; a code upload should be far below
PASSED_ENV = ("NANOSTUDIES_CACHE",)
META = "nanostudies."  # prefix of the job metadata keys this tool writes and reads
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    run_help = build_run_parser().format_help()
    options = run_help.split("options:\n", 1)[-1]
    blocks = re.split(r"\n(?=  -)", options)  # one block per option; the job's --address is ours to set
    run_options = "\n".join(b for b in blocks if not b.startswith(("  -h,", "  --address")))
    ap = _Parser(
        prog="python -m study.submit",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="python -m study.submit STUDY [study.run options] --output ABS_PATH [--address URL] "
        "[--follow]\n       python -m study.submit --status JOB_ID | --stop JOB_ID | "
        "--fetch [JOB_ID|STUDY] [--dest DIR]",
        description="Submit a study to a Ray cluster (Ray Jobs); follow, inspect, stop it; fetch its results.",
        epilog="study.run options (passed through to the job; --address there is always auto):\n" + run_options,
    )
    ap.add_argument(
        "--address",
        default=None,
        help=f"the Ray dashboard (Jobs API) address (default: $RAY_ADDRESS, else {DEFAULT_ADDRESS})",
    )
    ap.add_argument("--follow", action="store_true", help="after submitting, stream the job's logs until it ends")
    action = ap.add_mutually_exclusive_group()
    action.add_argument("--status", metavar="JOB_ID", help="print a job's status and exit")
    action.add_argument("--stop", metavar="JOB_ID", help="stop a running job")
    action.add_argument(
        "--fetch",
        nargs="?",
        const="",
        metavar="JOB_ID|STUDY",
        help="copy a job's study directory (or STUDY's, from --output or its latest job) to --dest",
    )
    ap.add_argument("--dest", default=None, help="where --fetch puts the study directory (default results/)")
    return ap


# ----------------------------------------------------------------------------- the cluster


def resolve_address(address: str | None) -> str:
    address = address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    url = address if "://" in address else f"http://{address}"
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise UsageError(f"--address {address!r}: must be the dashboard's http://HOST:PORT (e.g. {DEFAULT_ADDRESS})")
    return url.rstrip("/")


def connect(address: str | None):
    """A JobSubmissionClient for the dashboard at address, or a UsageError that says what to do."""
    url = resolve_address(address)
    parts = urlsplit(url)
    try:  # fail fast: requests has no timeout of its own and would hang on a silent address
        socket.create_connection((parts.hostname, parts.port), timeout=5).close()
    except OSError as e:
        raise UsageError(
            f"--address {url}: cannot connect ({e.strerror or e}); is the Ray head running and its "
            f"dashboard port reachable (e.g. `ray dashboard cluster.yaml`)?"
        ) from None
    check_token_available()
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.ERROR)  # Ray's packaging chatter: our own lines say what matters
    try:
        return JobSubmissionClient(url)
    except AuthenticationError as e:
        raise UsageError(auth_message(url, e)) from None
    except (ConnectionError, RuntimeError, ValueError) as e:  # ValueError: an HTTP server that is not Ray's
        raise UsageError(f"--address {url}: {_first_line(e)}; is this the Ray dashboard's address?") from None


def check_token_available():
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return
    from ray._raylet import AuthenticationTokenLoader
    from ray.exceptions import AuthenticationError

    try:
        found = AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)
    except AuthenticationError as e:  # RAY_AUTH_TOKEN_PATH names a missing or empty file
        raise UsageError(str(getattr(e, "message", e)).split(". ")[0]) from None
    if not found:
        raise UsageError(
            "RAY_AUTH_MODE=token but no token found: put the cluster's token (`ray get-auth-token` on "
            "the head) in ~/.ray/auth_token, or name its file in RAY_AUTH_TOKEN_PATH"
        )


def auth_message(url: str, error) -> str:
    text = str(getattr(error, "message", error))
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token" or text.startswith("Authentication required"):
        return (
            f"the cluster at {url} requires a token: export RAY_AUTH_MODE=token and put its token (`ray "
            f"get-auth-token` on the head) in ~/.ray/auth_token or a file named by RAY_AUTH_TOKEN_PATH"
        )
    return (
        f"the cluster at {url} rejected the token (RAY_AUTH_MODE=token): the one in RAY_AUTH_TOKEN, "
        f"RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token is not the head's (`ray get-auth-token` there)"
    )


def _call(client, fn, *args):
    """A Jobs API call; a missing job or a refused token becomes a one-line UsageError."""
    from ray.exceptions import AuthenticationError

    try:
        return fn(*args)
    except AuthenticationError as e:
        raise UsageError(auth_message(client.get_address(), e)) from None
    except RuntimeError as e:
        text = _first_line(e)
        if "404" in text or "does not exist" in text:
            raise UsageError(f"no job {args[0]!r} on {client.get_address()}" if args else text) from None
        raise


def _first_line(e) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ----------------------------------------------------------------------------- submitting


def validate_locally(run_argv: list[str]):
    """The study options exactly as the job will parse them, checked by study.run itself (no Ray)."""
    proc = subprocess.run(
        [sys.executable, "-m", "study.run", *run_argv, "--dry-run"], cwd=PROJECT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.splitlines() if l.strip()] or ["study.run --dry-run failed"]
        line = lines[-1].replace("python -m study.run: ", "")
        if proc.returncode == 2:
            raise UsageError(line.removeprefix("error: "))
        print(
            f"error: checking the study options failed (study.run --dry-run exit {proc.returncode}): {line}",
            file=sys.stderr,
        )
        sys.exit(1)
    return proc.stdout


def check_output(output: str):
    """Where the job writes: a storage URI, by study.run's rule (its form, no credentials in it: the cluster's
    nodes bring their own), or an absolute path on storage every node shares, which this machine need not mount."""
    if is_uri(output) and not output.startswith("file://"):
        check_run_output(output)
        return
    if not os.path.isabs(output.removeprefix("file://")):
        raise UsageError(
            f"--output {output}: give an absolute path on storage every node shares (e.g. --output "
            f"/shared/results) or a storage URI (s3://BUCKET/PATH, gs://BUCKET/PATH); the job runs in a "
            f"temporary copy of the project, where a relative path would be lost"
        )


def _checkable_here(run_argv: list[str], output: str) -> list[str]:
    """The options for study.run --dry-run on this machine: a shared path is the cluster's (check_output took
    its form), so the dry run judges the default folder instead of a path this machine may not have."""
    return run_argv if is_uri(output) and not output.startswith("file://") else [*run_argv, "--output", "results"]


def upload_size(root: Path = PROJECT) -> tuple[int, list[tuple[int, str]]]:
    """Bytes the working_dir upload holds at most (before compression) and its largest files; Ray's own
    packaging applies the same EXCLUDES (and .gitignore besides)."""
    import fnmatch

    names = [p.strip("/") for p in EXCLUDES]
    anchored = {p.strip("/") for p in EXCLUDES if p.startswith("/")}

    def excluded(rel: str, name: str, is_dir: bool) -> bool:
        for pattern, plain in zip(EXCLUDES, names):
            if pattern.endswith("/") and not is_dir:
                continue
            if plain in anchored and rel != plain:
                continue
            if fnmatch.fnmatch(name, plain):
                return True
        return False

    total, files = 0, []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel = lambda n: n if rel_dir == "." else f"{rel_dir}/{n}"
        dirnames[:] = [d for d in dirnames if not excluded(rel(d), d, True)]
        for f in filenames:
            path = os.path.join(dirpath, f)
            if excluded(rel(f), f, False) or not os.path.isfile(path):
                continue
            size = os.path.getsize(path)
            total += size
            files.append((size, rel(f)))
    return total, sorted(files, reverse=True)[:5]


def runtime_env() -> dict:
    env_vars = {k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)}
    env_vars["PYTHONUNBUFFERED"] = "1"  # progress lines reach --follow as they are printed
    return {"working_dir": str(PROJECT), "excludes": list(EXCLUDES), "env_vars": env_vars}


def entrypoint(run_argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in ["python", "-m", "study.run", *run_argv, "--address", "auto"])


def submit(sargs, run_argv: list[str]) -> int:
    run_args = build_run_parser()
    run_args.error = _raise_usage
    args = run_args.parse_args(run_argv)
    if args.list:
        return subprocess.run([sys.executable, "-m", "study.run", "--list"], cwd=PROJECT).returncode
    if not args.study:
        raise UsageError(
            "no study given: python -m study.submit STUDY --output ABS_PATH (studies: " + ", ".join(STUDIES) + ")"
        )
    study_file = args.study.endswith((".toml", ".py"))
    if not study_file and args.study not in STUDIES:
        raise UsageError(f"unknown study {args.study!r}; studies: {', '.join(STUDIES)}, or a study file NAME.toml")
    job_argv = run_argv
    if study_file:  # checked here from wherever it is (study.run runs in the project); the job runs it by name
        path = os.path.abspath(args.study)
        run_argv = [path if a == args.study else a for a in run_argv]
        job_argv = [Path(path).name if a == args.study else a for a in job_argv]
    if args.dry_run:  # what the job would run, shown here; nothing is submitted
        return subprocess.run(
            [sys.executable, "-m", "study.run", *_checkable_here(run_argv, args.output)], cwd=PROJECT
        ).returncode
    check_output(args.output)
    plan = validate_locally(_checkable_here(run_argv, args.output))
    client = connect(sargs.address)
    size, largest = upload_size()
    if size > UPLOAD_LIMIT:
        raise UsageError(
            f"the project upload would be {size / 2**20:.0f} MiB (limit {UPLOAD_LIMIT / 2**20:.0f} MiB); "
            f"largest: "
            + ", ".join(f"{p} ({s / 2**20:.1f} MiB)" for s, p in largest)
            + "; add them to .gitignore or .rayignore"
        )
    env = runtime_env()
    name = args.study
    if study_file:  # the job gets the file's text (it may live outside the uploaded project) and runs it by name
        from study.files import load_study_file

        spec = load_study_file(path)
        name = spec.name
        env["env_vars"][STUDY_FILE_ENV] = json.dumps({"name": spec.source_name, "text": spec.source})
    job_id = f"{name}-{datetime.now():%Y%m%d-%H%M%S}-{os.urandom(2).hex()}"
    if args.storage and "@" in args.storage:
        print(
            "note: --storage is part of the job's entrypoint, which the cluster's job list shows: prefer a URL "
            "without a password (e.g. ~/.pgpass on the head)",
            file=sys.stderr,
        )
    metadata = {
        META + "study": name,
        META + "profile": args.profile,
        META + "output": args.output if is_uri(args.output) else os.path.normpath(args.output),
    }
    from ray.exceptions import AuthenticationError

    try:
        job_id = client.submit_job(
            entrypoint=entrypoint(job_argv), submission_id=job_id, runtime_env=env, metadata=metadata
        )
    except AuthenticationError as e:
        raise UsageError(auth_message(client.get_address(), e)) from None
    trials = plan.splitlines()[0] if plan.strip() else name
    print(f"submitted job {job_id} to {client.get_address()}: {trials}", flush=True)
    print(f"  python -m study.run {' '.join(shlex.quote(a) for a in redacted_argv(job_argv))} --address auto")
    print(f"  code: {size / 2**20:.1f} MiB from {PROJECT}; results: {join(args.output, name)}")
    if not sargs.follow:
        print(f"  then: python -m study.submit --status {job_id}  (or --stop, --fetch)")
        return 0
    return follow(client, job_id)


def _raise_usage(message):
    raise UsageError(message)


def follow(client, job_id: str) -> int:
    async def tail():
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    try:
        try:
            asyncio.run(tail())
        except RuntimeError as e:  # the log stream broke (head restarted, network): the job may still run
            print(f"warning: the log stream ended early ({_first_line(e)})", file=sys.stderr)
        status = _wait_terminal(client, job_id, timeout=30)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; the job goes on: python -m study.submit --status {job_id} (or --stop {job_id})",
            file=sys.stderr,
        )
        return 130
    info = _call(client, client.get_job_info, job_id)
    print(
        f"job {job_id}: {status}" + ("" if status == "SUCCEEDED" else f" ({_first_line(info.message or '')})"),
        flush=True,
    )
    if status == "SUCCEEDED":
        print(f"fetch the results: python -m study.submit --fetch {job_id}")
    return 0 if status == "SUCCEEDED" else 1


def _wait_terminal(client, job_id: str, timeout: float) -> str:
    deadline = time.time() + timeout
    while True:
        status = str(_call(client, client.get_job_status, job_id))
        if status in TERMINAL or time.time() > deadline:
            return status
        time.sleep(0.5)


# ----------------------------------------------------------------------------- status, stop


def _when(ms) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def status(sargs) -> int:
    client = connect(sargs.address)
    info = _call(client, client.get_job_info, sargs.status)
    meta = info.metadata or {}
    print(f"{sargs.status}: {info.status}")
    if META + "study" in meta:
        print(
            f"  study {meta[META + 'study']} ({meta.get(META + 'profile', '?')} profile), results in "
            f"{join(meta.get(META + 'output', '?'), meta[META + 'study'])}"
        )
    else:
        print(f"  entrypoint: {info.entrypoint}")
    duration = ""
    if info.start_time:
        seconds = ((info.end_time or time.time() * 1000) - info.start_time) / 1000
        duration = f" ({int(seconds // 60)}m{int(seconds % 60):02d}s)"
    print(f"  started {_when(info.start_time)}, ended {_when(info.end_time)}{duration}")
    if info.message:
        print(f"  {_first_line(info.message)}")
    return 0


def stop(sargs) -> int:
    client = connect(sargs.address)
    job_id = sargs.stop
    if not _call(client, client.stop_job, job_id):
        print(f"{job_id}: already {_call(client, client.get_job_status, job_id)}; nothing to stop")
        return 0
    print(f"{job_id}: stop requested", flush=True)
    final = _wait_terminal(client, job_id, timeout=30)
    print(f"{job_id}: {final}")
    return 0


# ----------------------------------------------------------------------------- fetching results


def fetch(sargs, run_argv: list[str]) -> int:
    """Copies OUTPUT/STUDY (a shared path or a cloud URI) to DEST/STUDY with pyarrow.fs."""
    target = sargs.fetch
    job_id = study = output = None
    if target and target not in STUDIES:
        job_id = target
    else:
        run_args = build_run_parser()
        run_args.error = _raise_usage
        args = run_args.parse_args(run_argv)
        study = target or args.study
        if not study:
            raise UsageError("--fetch needs a job id or a study: --fetch JOB_ID, or STUDY --fetch [--output PATH]")
        if study not in STUDIES:
            raise UsageError(f"unknown study {study!r}; studies: {', '.join(STUDIES)}")
        if "--output" in run_argv or any(a.startswith("--output=") for a in run_argv):
            output = args.output
    if run_argv and job_id:
        raise UsageError(f"--fetch {job_id}: unexpected {run_argv[0]!r} (the job knows its study and output)")
    if output is None:  # from the job's metadata: the given job, or the latest job of the study
        client = connect(sargs.address)
        if job_id:
            info = _call(client, client.get_job_info, job_id)
        else:
            jobs = [j for j in _call(client, client.list_jobs) if (j.metadata or {}).get(META + "study") == study]
            if not jobs:
                raise UsageError(f"--fetch {study}: no job of {study} on {client.get_address()}; give --output PATH")
            info = max(jobs, key=lambda j: j.start_time or 0)
            job_id = info.submission_id
        meta = info.metadata or {}
        if META + "output" not in meta:
            raise UsageError(f"--fetch {job_id}: not a job submitted by study.submit (no study/output metadata)")
        study, output = meta[META + "study"], meta[META + "output"]
        if str(info.status) not in TERMINAL:
            print(f"note: job {job_id} is {info.status}: fetching the results written so far", file=sys.stderr)
    return copy_study(output, study, sargs.dest or "results")


def check_study_name(study) -> str:
    """A study name from a job's metadata, which any Jobs API user can set: it names a folder under --dest, so
    only a plain name passes (no '..', no '/', not absolute)."""
    if not isinstance(study, str) or not re.fullmatch(r"[a-z0-9_]+", study):
        raise UsageError(
            f"--fetch: the job's study name {str(study)[:80]!r} is not a study name (only a-z, 0-9 and _); "
            f"nothing was copied"
        )
    return study


def copy_study(output: str, study: str, dest: str) -> int:
    import pyarrow.fs as pafs

    study, dest = check_study_name(study), check_folder(dest, "--dest")
    source = join(output, study)
    try:
        fs, path = open_location(source)
        info = fs.get_file_info(path)
    except (OSError, ValueError, TypeError) as e:
        raise UsageError(f"--fetch: cannot read {source}: {_first_line(e)}") from None
    if info.type != pafs.FileType.Directory:
        raise UsageError(
            f"--fetch: {source} is not there from this machine; mount the shared storage at the same "
            f"path, or give --output PATH|URI with the study"
        )
    target = Path(dest) / study
    if not is_uri(source) and target.exists() and target.resolve() == Path(source).resolve():
        print(f"{target} is the study directory itself: nothing to copy")
        return 0
    files = [f for f in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if f.type == pafs.FileType.File]
    target.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(
        path,
        str(target.resolve()),
        source_filesystem=fs,
        destination_filesystem=pafs.LocalFileSystem(),
        use_threads=True,
    )
    size = sum(f.size or 0 for f in files)
    print(f"fetched {len(files)} files ({size / 2**20:.1f} MiB) from {source} into {target}")
    if (target / "trials.parquet").exists():
        print(f"build the report: python -m reports.build {target}")
    else:
        print(f"note: {target} holds no trials.parquet yet (the study has not finished)")
    return 0


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        sargs, run_argv = build_parser().parse_known_args(argv)
        if sargs.status or sargs.stop:
            if run_argv:
                raise UsageError(f"{'--status' if sargs.status else '--stop'}: unexpected {run_argv[0]!r}")
            return status(sargs) if sargs.status else stop(sargs)
        if sargs.fetch is not None:
            return fetch(sargs, run_argv)
        if sargs.dest is not None:
            raise UsageError("--dest goes with --fetch")
        return submit(sargs, run_argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
