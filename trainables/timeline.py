"""Phase marks for benchmarks/bench_service.py: where a study's wall time goes (Ray start, worker start, first
step, reports, checkpoints, teardown). When NANOSTUDIES_TIMELINE names a file, every process of the study
(the driver, trial actors, Train workers: they inherit the variable) appends one JSON line per mark; unset, a
mark does nothing."""

import json
import os
import time
from contextlib import contextmanager

TIMELINE_ENV = "NANOSTUDIES_TIMELINE"


def mark(event: str, **fields):
    path = os.environ.get(TIMELINE_ENV)
    if not path:
        return
    line = json.dumps({"t": time.time(), "pid": os.getpid(), "event": event, **fields}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # one write per line: appends never interleave
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@contextmanager
def span(event: str, **fields):
    """Marks event_start and event_end around a block."""
    mark(f"{event}_start", **fields)
    try:
        yield
    finally:
        mark(f"{event}_end", **fields)
