"""Secrets and trust at the edges: --output (local folders made absolute once, unusable ones and URIs carrying
credentials refused in one line, a URI's dry run offline), study.submit's --fetch (--dest, a job's study name)
and what its job upload leaves out. No Ray cluster here."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from study_cli import ROOT, cli_env

import study.run
import study.submit
from study.run import UsageError, check_output
from study.submit import copy_study, upload_size

SMOKE = ["nanohead_grid", "--profile", "smoke"]
SECRET = "Zq9-never-print-this-7Kx"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def tree(root: Path) -> list[str]:
    """Every path under root, links not followed."""
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files)


# ----------------------------------------------------------------------------- local --output


@pytest.mark.parametrize(
    "given,expected",
    [
        ("results", "CWD/results"),
        ("./x", "CWD/x"),
        ("x/y", "CWD/x/y"),
        ("x/../y", "CWD/y"),
        ("~/x", "HOME/x"),
        ("file:///abs/x", "/abs/x"),
    ],
)
def test_local_outputs_become_absolute(given, expected, tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    want = expected.replace("CWD", str(tmp_path / "cwd")).replace("HOME", str(tmp_path / "home"))
    assert check_output(given) == want
    assert sorted(os.listdir(tmp_path)) == ["cwd", "home"] and not os.listdir(tmp_path / "cwd")  # nothing made


@pytest.mark.parametrize(
    "uri",
    [
        "s3://lab/results",
        "s3://lab/r?region=eu-west-1&endpoint_override=localhost:9000",
        "gs://lab/results",
        "abfs://container@acct.dfs.core.windows.net/results",
        "abfss://acct.dfs.core.windows.net/container/results?enable_tls=true",
    ],
)
def test_uris_without_credentials_pass_unchanged(uri):
    assert check_output(uri) == uri


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    return f


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize("case", ["existing_file", "under_a_file", "proc", "sys", "link_into_proc"])
def test_unusable_local_output_exits_2_with_one_line(case, dry_run, a_file, tmp_path, capsys):
    link = tmp_path / "fd"
    link.symlink_to("/proc/self/fd")
    output, says = {
        "existing_file": (a_file, "not a folder"),
        "under_a_file": (a_file / "sub", "not a folder"),
        "proc": ("/proc/nanostudies", "/proc"),
        "sys": ("/sys/kernel/nanostudies", "/sys"),
        "link_into_proc": (link / "results", "/proc"),
    }[case]
    before = tree(tmp_path)
    code = study.run.main([*SMOKE, "--output", str(output), *(["--dry-run"] if dry_run else [])])
    line = one_error_line(capsys)
    assert code == 2 and line.startswith("error: --output") and says in line, line
    assert tree(tmp_path) == before and a_file.read_text() == "mine"
    assert not os.path.exists("/proc/nanostudies") and not os.path.exists("/sys/kernel/nanostudies")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_output_in_a_folder_without_write_permission_exits_2(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert study.run.main([*SMOKE, "--dry-run", "--output", str(locked / "results")]) == 2
    assert "permission denied" in one_error_line(capsys) and not os.listdir(locked)


# ----------------------------------------------------------------------------- credentials in a URI


@pytest.mark.parametrize(
    "uri,named",
    [
        # the case: an Azure service principal's secret in the query
        (f"abfs://c@acct.dfs.core.windows.net/p?client_id=a&client_secret={SECRET}&tenant_id=b", "client_secret"),
        (f"abfs://c:{SECRET}@acct.dfs.core.windows.net/p", "credentials"),  # an account key as the password
        (f"abfs://acct.dfs.core.windows.net/c/p?sv=2024&sig={SECRET}", "sig"),  # a SAS token
        (f"s3://someone:{SECRET}@lab/results", "credentials"),
        (f"s3://{SECRET}@lab/results", "credentials"),  # pyarrow takes a lone user as the key id
        (f"s3://lab/results?access_key=AK&secret_key={SECRET}", "secret_key"),
        (f"s3://lab/results?region=us-east-1&session_token={SECRET}", "session_token"),
        (f"gs://{SECRET}@lab/results", "credentials"),
        (f"gs://lab/results?token={SECRET}", "token"),
    ],
)
def test_credentials_in_a_uri_exit_2_without_echoing_them(uri, named, capsys):
    assert study.run.main([*SMOKE, "--dry-run", "--output", uri]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: --output") and named in line and SECRET not in line, line
    assert "environment" in line


def test_bad_uri_forms_exit_2(capsys):
    for uri, says in [("nosuchfs://lab/results", "nosuchfs"), ("s3:///results", "bucket"), ("s3://[lab/x", "URI")]:
        assert study.run.main([*SMOKE, "--dry-run", "--output", uri]) == 2
        assert says in one_error_line(capsys)


def test_s3_dry_run_makes_no_network_call(token_cache):
    """In a network namespace of its own (no interface but a down loopback), pyarrow's s3 from_uri fails at once
    (it asks AWS for the bucket's region); the dry run with the same URI must pass, so it made no such call."""
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n is not allowed here (needs root or user namespaces)")
    env = {k: v for k, v in cli_env(token_cache).items() if not k.startswith("AWS_")}  # no endpoint: AWS itself
    control = subprocess.run(
        [
            "unshare",
            "-n",
            sys.executable,
            "-c",
            "import pyarrow.fs; pyarrow.fs.FileSystem.from_uri('s3://nanostudies-lab/results')",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert control.returncode != 0 and "region" in control.stderr, control.stderr  # the sandbox stops a lookup
    proc = subprocess.run(
        [
            "unshare",
            "-n",
            sys.executable,
            "-m",
            "study.run",
            *SMOKE,
            "--dry-run",
            "--output",
            "s3://nanostudies-lab/results",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "nanohead_p00_d2" in proc.stdout


# ----------------------------------------------------------------------------- study.submit


def test_submit_refuses_credentials_by_the_same_rule(capsys):
    uri = f"abfs://c@acct.dfs.core.windows.net/p?client_id=a&client_secret={SECRET}&tenant_id=b"
    assert study.submit.main([*SMOKE, "--output", uri, "--address", "http://127.0.0.1:1"]) == 2
    line = one_error_line(capsys)
    assert "client_secret" in line and SECRET not in line and "127.0.0.1:1" not in line  # refused before connecting


@pytest.mark.parametrize("case", ["existing_file", "under_a_file"])
def test_fetch_into_a_file_exits_2(case, a_file, tmp_path, capsys):
    source = tmp_path / "shared" / "nanohead_grid"
    source.mkdir(parents=True)
    (source / "trials.csv").write_text("trial\nt0\n")
    dest = a_file if case == "existing_file" else a_file / "sub"
    assert (
        study.submit.main(["nanohead_grid", "--fetch", "--output", str(tmp_path / "shared"), "--dest", str(dest)]) == 2
    )
    line = one_error_line(capsys)
    assert line.startswith("error: --dest") and "not a folder" in line
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize("name", ["../x", "..", "/tmp/x", "a/b", "", "Nano", "x\ny"])
def test_fetch_refuses_a_hostile_study_name_from_job_metadata(name, tmp_path):
    """A job's metadata names the study; '../x' would put the copy beside --dest instead of in it."""
    output = tmp_path / "a" / "shared"
    escape = tmp_path / "a" / "x"  # what output/../x reaches
    (output / "nanohead_grid").mkdir(parents=True)
    escape.mkdir()
    (escape / "payload.txt").write_text("from the job")
    dest = tmp_path / "b" / "dest"
    with pytest.raises(UsageError) as e:
        copy_study(str(output), name, str(dest))
    assert "study name" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "b").exists()


def test_fetch_copies_a_plain_study_name(tmp_path, capsys):
    output = tmp_path / "shared"
    (output / "nanohead_grid").mkdir(parents=True)
    (output / "nanohead_grid" / "study.json").write_text("{}")
    assert copy_study(str(output), "nanohead_grid", str(tmp_path / "dest")) == 0
    assert (tmp_path / "dest" / "nanohead_grid" / "study.json").read_text() == "{}"


# ----------------------------------------------------------------------------- the job upload

KEPT = {"study/run.py": 100, "README.md": 40, "docs/keys.md": 30, "tests/test_key.py": 20}
SECRETS = [
    ".env",
    ".env.local",
    "deploy/server.pem",
    "tls.key",
    "certs/client.p12",
    "credentials",
    "gcloud.credentials",
    ".aws/credentials",
    ".aws/config",
    ".netrc",
    "home/.pgpass",
    "id_rsa",
    "id_rsa.pub",
    ".ssh/id_ed25519",
    "service-account-prod.json",
    ".git/config",
    "vendored/lib/.git",
]


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    for rel, size in KEPT.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * size)
    for rel in SECRETS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(SECRET * 10)
    return root


def test_upload_size_leaves_out_secrets(project):
    total, largest = upload_size(project)
    assert total == sum(KEPT.values())  # 190 bytes: the kept files only
    assert {p for _, p in largest} == set(KEPT)


def test_rays_own_packaging_leaves_out_secrets(project, tmp_path):
    """What Ray actually zips for the job's working_dir, with the runtime_env's excludes."""
    from ray._private.runtime_env.packaging import create_package

    package = tmp_path / "package.zip"
    create_package(str(project), package, include_gitignore=False, excludes=study.submit.runtime_env()["excludes"])
    with zipfile.ZipFile(package) as z:
        files = {n for n in z.namelist() if not n.endswith("/")}
        assert files == set(KEPT)
        assert all(SECRET.encode() not in z.read(n) for n in files)
