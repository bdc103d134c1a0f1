"""One driver per study: the lock file, its holder, staleness and the race between two takers.

The holders here are real processes (this one, a child, a child that has exited), not fakes."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest

from study.lock import LEASE_S, LOCK_FILE, StudyLock, StudyLocked


def _holder(path, **fields):
    record = dict(
        host=socket.gethostname(),
        pid=os.getpid(),
        started="2026-01-01T00:00:00+00:00",
        token="other",
        renewed=time.time(),
    )
    (path / LOCK_FILE).write_text(json.dumps({**record, **fields}))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_held_lock_refuses_a_second_driver_naming_the_first(tmp_path):
    first = StudyLock(str(tmp_path))
    first.acquire()
    try:
        record = json.loads((tmp_path / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(StudyLocked) as refused:
            StudyLock(str(tmp_path)).acquire()
        assert f"pid {os.getpid()} on {socket.gethostname()}, started {record['started']}" == str(refused.value)
    finally:
        first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    again = StudyLock(str(tmp_path))  # released: free for the next driver
    again.acquire()
    again.release()


def test_a_dead_drivers_lock_is_taken_over(tmp_path):
    _holder(tmp_path, pid=_dead_pid())
    lock = StudyLock(str(tmp_path))
    lock.acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["token"] == lock.token
    lock.release()


def test_another_hosts_lock_holds_until_its_lease_runs_out(tmp_path):
    _holder(tmp_path, host="elsewhere", pid=1, renewed=time.time() - LEASE_S / 2)
    with pytest.raises(StudyLocked, match="on elsewhere"):
        StudyLock(str(tmp_path)).acquire()
    _holder(tmp_path, host="elsewhere", pid=1, renewed=time.time() - LEASE_S - 1)
    lock = StudyLock(str(tmp_path))
    lock.acquire()
    lock.release()


def test_release_never_removes_a_lock_another_driver_took_over(tmp_path):
    lock = StudyLock(str(tmp_path))
    lock.acquire()
    _holder(tmp_path, token="taker")  # e.g. this driver hung past its lease and another took over
    lock.release()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["token"] == "taker"


def _race(folder, start, results):
    lock = StudyLock(folder)
    while time.time() < start:
        pass
    try:
        lock.acquire()
        results.put("held")
        time.sleep(1.0)  # hold it while the others try
        lock.release()
    except StudyLocked:
        results.put("refused")


def test_of_drivers_starting_at_once_exactly_one_holds_the_lock(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start = time.time() + 3  # after every process has imported
    procs = [ctx.Process(target=_race, args=(str(tmp_path), start, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["held", "refused", "refused", "refused"]
