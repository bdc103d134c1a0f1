"""One driver per study: a lock file in the study's folder or URI, held while a driver runs the study.

The lock names its holder (host, pid, start time) and the holder renews it every RENEW_S seconds. A lock is
stale, and taken over, when its holder's process is gone (same host) or it was last renewed more than LEASE_S
seconds ago (another host, or a reused pid). Object stores have no exclusive create, so taking the lock is
write-then-read-back: of two drivers that write at once, the one whose token is read back holds it.
"""

import json
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime

import pyarrow.fs as pafs

from trainables.storage import is_uri, join, open_location, write_atomic

LOCK_FILE = ".lock"
LEASE_S = 120.0
RENEW_S = 20.0
SETTLE_S = 0.2  # between writing the lock and reading it back: a concurrent writer's token lands by then


class StudyLocked(RuntimeError):
    """Another driver runs this study; the message names it in one line."""


class StudyLock:
    def __init__(self, study_location: str):
        self.location = join(study_location, LOCK_FILE)
        self.token = uuid.uuid4().hex
        self.record = dict(
            host=socket.gethostname(),
            pid=os.getpid(),
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            token=self.token,
        )
        self._stop = threading.Event()
        self._thread = None

    def acquire(self):
        holder = self._read()
        if holder is not None and not _stale(holder):
            raise StudyLocked(_describe(holder))
        self._write()
        time.sleep(SETTLE_S)
        holder = self._read()
        if holder is None or holder.get("token") != self.token:
            raise StudyLocked(_describe(holder or {}))
        self._thread = threading.Thread(target=self._renew, name="study-lock", daemon=True)
        self._thread.start()

    def release(self):
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        holder = self._read()
        if holder and holder.get("token") == self.token:  # never remove a lock another driver took over
            fs, path = open_location(self.location)
            fs.delete_file(path)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def _renew(self):
        while not self._stop.wait(RENEW_S):
            try:
                self._write()
            except OSError:  # storage briefly unreachable: the next renewal retries well within the lease
                pass

    def _write(self):
        text = json.dumps({**self.record, "renewed": time.time()})
        if not is_uri(self.location):
            write_atomic(self.location, text)
            return
        fs, path = open_location(self.location)
        with fs.open_output_stream(path) as f:  # an object store replaces an object whole
            f.write(text.encode())

    def _read(self) -> dict | None:
        fs, path = open_location(self.location)
        try:
            with fs.open_input_stream(path) as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None
        except ValueError:
            return {}  # torn (written whole everywhere, so never expected): stale, nobody can renew it
        except OSError:
            if fs.get_file_info(path).type == pafs.FileType.NotFound:  # some filesystems say so in an OSError
                return None
            raise


def holder_alive(holder: dict) -> bool:
    """Whether the driver that wrote this lock record still runs (reports.live reads the lock, never takes it)."""
    return not _stale(holder)


def _stale(holder: dict) -> bool:
    renewed = holder.get("renewed")
    if not isinstance(renewed, (int, float)) or time.time() - renewed > LEASE_S:
        return True
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            pass
    return False


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
