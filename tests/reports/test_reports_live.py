"""The live view of a running study (reports/live.py, served by reports.serve): its JSON from study folders written
by hand against hand-computed counts and ETAs, the page in headless Chromium, and a real smoke study watched as it
runs (a trial seen running, then done, on one page load)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from reports_chromium import Chromium, find_chromium
from test_reports_serve import get

from reports.live import live_page, live_state
from reports.serve import main, make_server

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = find_chromium()
NAME = "<script>alert(1)<script>"  # a trial name that is markup (no "/": it is a folder's name)
PLANNED = ["a_done", "b_done", NAME, "d_pending", "e_pending"]


def write_json(path: Path, obj, mtime: float | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def write_trial(d: Path, name: str, config: dict, bpbs: list, started: float, updated: float, planned=30):
    """A trial folder as tune.write_trial_files and train.emit leave it: one metrics line per eval of 10 steps."""
    t = d / "trials" / name
    write_json(t / "trial_config.json", config, started)
    write_json(t / "config.json", {"trial": config, "planned_steps": planned}, started)
    lines = [{"step": 10 * (i + 1), "val_bpb": v, "train_loss": 5.0} for i, v in enumerate(bpbs)]
    (t / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    os.utime(t / "metrics.jsonl", (updated, updated))


def running_study(root: Path, now: float, lock: dict | None = None) -> Path:
    """Five planned trials, two at once: a_done ran 40 s, b_done 60 s, NAME is at step 10 of 30, two pending."""
    d = root / "live_study"
    meta = dict(
        study="live_study",
        metric="val_bpb",
        mode="min",
        started="2026-01-01T00:00:00",
        ended=None,
        trials_planned=dict(count=5, names=PLANNED, at_once=2),
    )
    write_json(d / "study.json", meta, now - 1000)
    write_trial(d, "a_done", {"lr": 0.001, "seed": 0}, [4.5, 4.2, 4.3], now - 200, now - 160)
    write_trial(d, "b_done", {"lr": 0.002, "seed": 0}, [4.4, 4.1, 4.0], now - 120, now - 60)
    write_trial(d, NAME, {"lr": 0.001, "seed": 1}, [4.6], now - 20, now - 5)
    holder = dict(host=socket.gethostname(), pid=os.getpid(), started="2026-01-01T00:00:00", token="t", renewed=now)
    write_json(d / ".lock", {**holder, **(lock or {})})
    return d


def by_name(state):
    return {t["name"]: t for t in state["trials"]}


def test_running_study_counts_statuses_and_eta(tmp_path):
    now = time.time()
    s = live_state(running_study(tmp_path, now), now=now)
    assert s["state"] == "running"
    assert [t["name"] for t in s["trials"]] == PLANNED  # in the plan's order, the pending ones included
    assert s["counts"] == {"done": 2, "running": 1, "pending": 2, "failed": 0, "stopped early": 0, "unfinished": 0}
    assert s["total"] == 5 and s["at_once"] == 2
    # the mean finished trial took (40 + 60) / 2 = 50 s; 3 trials left (1 running, 2 pending), 2 at once
    assert s["eta_s"] == pytest.approx(50 * 3 / 2)
    t = by_name(s)
    assert t["a_done"]["status"] == "done" and (t["a_done"]["latest"], t["a_done"]["best"]) == (4.3, 4.2)
    assert t["b_done"]["best"] == 4.0 and t["b_done"]["seconds"] == pytest.approx(60)
    assert t[NAME]["status"] == "running" and (t[NAME]["step"], t[NAME]["planned_steps"]) == (10, 30)
    assert t[NAME]["seconds"] == pytest.approx(20) and t[NAME]["config"] == {"lr": 0.001, "seed": 1}
    assert t["d_pending"]["status"] == "pending" and t["d_pending"]["step"] is None
    assert s["curves"]["b_done"] == {"steps": [10, 20, 30], "values": [4.4, 4.1, 4.0]}
    assert s["curves"][NAME] == {"steps": [10], "values": [4.6]}


def test_a_study_whose_driver_is_gone_is_stalled_not_running(tmp_path):
    now = time.time()
    # another host's lock, last renewed 10 min ago (the driver renews every 20 s): nobody runs the study
    d = running_study(tmp_path, now, lock=dict(host="elsewhere", renewed=now - 600))
    s = live_state(d, now=now + 300)
    assert s["state"] == "stalled" and s["eta_s"] is None
    # the newest write is NAME's metrics line, at now - 5: 305 s before now + 300, 5 min
    assert s["state_text"].startswith("stalled: no update for 5 min;")
    assert by_name(s)[NAME]["status"] == "unfinished" and s["counts"]["running"] == 0
    # this host's lock, renewed just now, of a process that has exited: gone at once
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    write_json(d / ".lock", dict(host=socket.gethostname(), pid=proc.pid, renewed=now))
    s = live_state(d, now=now)
    assert s["state"] == "stalled" and f"pid {proc.pid} on {socket.gethostname()}) is gone" in s["state_text"]
    (d / ".lock").unlink()
    assert "no driver holds the study's lock" in live_state(d, now=now)["state_text"]


def test_tune_state_marks_failed_and_stopped_trials_and_an_ended_study_is_finished(tmp_path):
    now = time.time()
    d = running_study(tmp_path, now)
    write_trial(d, "d_pending", {"lr": 0.003, "seed": 0}, [9.0], now - 50, now - 20)
    # Tune's experiment state as Ray 2.60 saves it: per trial, its state as a JSON string and its run metadata
    states = [
        [json.dumps({"status": "ERROR", "relative_logdir": "d_pending", "trial_id": "x_1"}), "{}"],
        [json.dumps({"status": "TERMINATED", "relative_logdir": NAME, "trial_id": "x_2"}), "{}"],
    ]
    write_json(d / "tune" / "experiment_state-2026-01-01_00-00-00.json", {"trial_data": states})
    s = live_state(d, now=now)
    t = by_name(s)
    assert t["d_pending"]["status"] == "failed" and t[NAME]["status"] == "stopped early"
    assert s["counts"] == {"done": 2, "running": 0, "pending": 1, "failed": 1, "stopped early": 1, "unfinished": 0}
    # finished trials: 40, 60, 30 (failed) and 15 s (stopped): mean 36.25 s x 1 pending / 2 at once
    assert s["eta_s"] == pytest.approx((40 + 60 + 30 + 15) / 4 * 1 / 2)
    meta = json.loads((d / "study.json").read_text())
    write_json(d / "study.json", {**meta, "ended": "2026-01-01T01:00:00"})
    s = live_state(d, now=now)
    assert s["state"] == "finished" and s["eta_s"] is None


def test_page_escapes_the_study_name_and_carries_no_data():
    page = live_page(NAME)
    assert NAME not in page and "&lt;script&gt;alert(1)&lt;script&gt;" in page
    assert "<script src" not in page and "plotly.js v" in page  # plotly inline: no network needed


@pytest.fixture
def served(tmp_path):
    now = time.time()
    d = running_study(tmp_path, now)
    srv = make_server(tmp_path, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, d, now
    srv.shutdown()
    srv.server_close()


def test_served_live_json_and_page(served):
    srv, d, _ = served
    assert srv.server_address[0] == "127.0.0.1"
    status, ctype, body = get(srv, "/live_study/live.json")
    assert status == 200 and ctype.startswith("application/json")
    state = json.loads(body)
    assert state["counts"]["running"] == 1 and NAME in [t["name"] for t in state["trials"]]
    assert b"<" not in body and b">" not in body  # the name arrives whole, as JSON escapes
    status, ctype, body = get(srv, "/live_study/live")
    assert status == 200 and ctype.startswith("text/html") and b"live.json" in body
    conn_status = get(srv, "/live_study")[0]
    assert conn_status == 302  # to the live page while the driver holds the lock
    for path in ("/live_study/.lock", "/live_study/trials/a_done/metrics.jsonl", "/live_study/live.html"):
        assert get(srv, path)[0] == 404, path


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on PATH (Debian: apt-get install chromium)")
def test_live_page_in_chromium_shows_rows_mark_and_eta_as_text(served):
    srv, d, _ = served
    host, port = srv.server_address[:2]
    b = Chromium(CHROMIUM)
    try:
        s = b.open(
            f"http://{host}:{port}/live_study/live",
            settle_js="document.querySelectorAll('#trials tbody tr').length === 5",
        )
        rows = b.eval(
            s,
            "Array.from(document.querySelectorAll('#trials tbody tr')).map(r => [r.dataset.trial, r.dataset.status, r.cells[0].textContent])",
        )
        assert rows == [[n, st, n] for n, st in zip(PLANNED, ["done", "done", "running", "pending", "pending"])]
        mark = "document.querySelector('tr.running .mark') && document.querySelector('tr.running').dataset.trial"
        assert b.eval(s, mark) == NAME
        progress = b.eval(s, "document.getElementById('progress').textContent")
        assert progress == "2 done, 1 running, 2 pending of 5 (2 at once); ETA 1m15s"  # 75 s, as computed above
        assert b.eval(s, "document.querySelectorAll('#curves .scatterlayer .trace').length") == 3
        assert not b.errors()
        assert (
            b.eval(s, "document.querySelectorAll('script').length") == 2
        )  # plotly and the page's own: no injected one
    finally:
        b.close()


# ----------------------------------------------------------------------------- a real study, watched as it runs


@pytest.mark.ray
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on PATH (Debian: apt-get install chromium)")
def test_live_page_of_a_running_smoke_study_shows_a_trial_move_from_running_to_done(tmp_path, token_cache):
    env = {**os.environ, "NANOSTUDIES_CACHE": token_cache, "PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true"}
    env.pop("RAY_ADDRESS", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "results"
    out.mkdir()
    with open(tmp_path / "study.log", "w") as log, open(tmp_path / "serve.log", "w") as slog:
        study = subprocess.Popen(
            [sys.executable, "-m", "study.run", "softmax1_ab", "--profile", "smoke", "--output", out],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        serve = subprocess.Popen(
            [sys.executable, "-m", "reports.serve", out, "--port", "0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=slog,
            text=True,
        )
        browser = None
        try:
            url = serve.stdout.readline().split(" at ")[1].split()[0]  # "serving DIR at http://127.0.0.1:PORT/ ..."
            assert url.startswith("http://127.0.0.1:")
            deadline = time.time() + 300
            while not (out / "softmax1_ab" / "study.json").exists():
                assert study.poll() is None and time.time() < deadline, (tmp_path / "study.log").read_text()
                time.sleep(0.5)
            browser = Chromium(CHROMIUM)
            s = browser.open(
                url + "softmax1_ab/live", settle_js="document.getElementById('state').textContent !== 'loading'"
            )
            loads = sum(e.get("method") == "Page.loadEventFired" for e in browser.events)
            browser.eval(s, "window.sameLoad = true")

            def wait_for(js, what):
                while True:
                    value = browser.eval(s, js)
                    if value:
                        return value
                    assert time.time() < deadline, (
                        f"{what}: not seen; study log:\n{(tmp_path / 'study.log').read_text()}"
                    )
                    time.sleep(0.5)

            name = wait_for(
                "(document.querySelector('tr.running .mark') || {closest: () => null}).closest('tr')?.dataset.trial",
                "a trial marked running",
            )
            row = f"document.querySelector('tr[data-trial=' + {json.dumps(json.dumps(name))} + ']')"
            wait_for(f"{row}.dataset.status === 'done'", f"{name} done")
            assert browser.eval(s, f"{row}.querySelector('.mark') === null")  # the running mark has gone with it
            assert browser.eval(s, "window.sameLoad === true")  # the same page, never reloaded
            assert sum(e.get("method") == "Page.loadEventFired" for e in browser.events) == loads
            assert study.wait(timeout=300) == 0, (tmp_path / "study.log").read_text()
            wait_for("document.getElementById('state').textContent.startsWith('finished')", "the study finished")
            assert browser.eval(s, "document.querySelector('#finished a').getAttribute('href')") == "report.html"
            assert browser.eval(s, "document.querySelectorAll('#trials tbody tr[data-status=done]').length") == 2
            assert not browser.errors()
            # the planned names the live view counts pending ones by are the names the trials ran under
            planned = json.loads((out / "softmax1_ab" / "study.json").read_text())["trials_planned"]
            ran = sorted(p.name for p in (out / "softmax1_ab" / "trials").iterdir())
            assert planned["count"] == 2 and sorted(planned["names"]) == ran and len(ran) == 2
        finally:
            if browser:
                browser.close()
            serve.terminate()
            serve.wait(timeout=30)
            if study.poll() is None:
                study.terminate()
                study.wait(timeout=60)


def test_cli_refuses_a_uri_it_cannot_read(capsys):
    assert main(["nope://bucket/results"]) == 2
    err = capsys.readouterr().err
    assert (
        err == "error: cannot read nope://bucket/results: Unrecognized filesystem type in URI: nope://bucket/results\n"
    )


def test_live_view_of_a_study_in_a_bucket(tmp_path, monkeypatch):
    """reports.serve pointed at a storage URI (moto's S3-compatible server on 127.0.0.1): the live view reads the
    study as its trials upload it, and fetches neither checkpoints nor code snapshots."""
    pytest.importorskip("moto", reason="moto (the dev extra) runs the S3-compatible server")
    import boto3
    from moto.server import ThreadedMotoServer

    from study.lock import StudyLock
    from trainables.storage import Mirror

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    srv = None
    try:
        host, port = server.get_host_and_port()
        env = dict(
            AWS_ENDPOINT_URL=f"http://{host}:{port}",
            AWS_ACCESS_KEY_ID="test-key-id",
            AWS_SECRET_ACCESS_KEY="test-secret",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
        )
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="lab")
        d = running_study(tmp_path / "here", time.time())
        write_json(d / "tune" / NAME / "checkpoint_000000" / "checkpoint.pt", "weights")
        write_json(d / "trials" / NAME / "code" / "trainables" / "train.py", "code")
        Mirror(d, "s3://lab/results/live_study").push()  # as the trials and the driver upload their files
        lock = StudyLock("s3://lab/results/live_study")  # the driver's lock, written into the bucket itself
        lock.acquire()

        srv = make_server("s3://lab/results", "127.0.0.1", 0, quiet=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        state = json.loads(get(srv, "/live_study/live.json")[2])
        assert state["state"] == "running" and by_name(state)[NAME]["step"] == 10
        assert state["counts"] == {
            "done": 2,
            "running": 1,
            "pending": 2,
            "failed": 0,
            "stopped early": 0,
            "unfinished": 0,
        }
        assert get(srv, "/")[0] == 200

        with open(d / "trials" / NAME / "metrics.jsonl", "a") as f:  # the trial's next eval, uploaded
            f.write(json.dumps({"step": 20, "val_bpb": 4.4}) + "\n")
        Mirror(d, "s3://lab/results/live_study").push()
        deadline = time.time() + 60
        while by_name(json.loads(get(srv, "/live_study/live.json")[2]))[NAME]["step"] != 20:
            assert time.time() < deadline, "the uploaded eval never reached the live view"
            time.sleep(0.5)
        fetched = [
            p.relative_to(srv.RequestHandlerClass.results_dir).as_posix()
            for p in srv.RequestHandlerClass.results_dir.rglob("*")
            if p.is_file()
        ]
        assert "live_study/trials/a_done/metrics.jsonl" in fetched
        assert not [p for p in fetched if "checkpoint" in p or "/code/" in p], fetched
        lock.release()  # the driver has ended: its lock is gone from the bucket, and so from the copy
        deadline = time.time() + 60
        while "no driver holds the study's lock" not in json.loads(get(srv, "/live_study/live.json")[2])["state_text"]:
            assert time.time() < deadline, "the released lock is still seen"
            time.sleep(0.5)
    finally:
        if srv:
            srv.shutdown()
            srv.server_close()
        server.stop()
