"""The on-disk cache shared by every trial and Ray worker on a node.

Several processes may prepare the same artefact at once (one per Ray worker), so every
artefact is built under an exclusive `fcntl.flock` and published with an atomic rename:
a reader sees either nothing or the whole finished artefact, never a half-written one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE_ENV = "NANOSTUDIES_CACHE"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """cache_dir if given, else $NANOSTUDIES_CACHE, else ~/.cache/nanostudies."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or "~/.cache/nanostudies"
    return Path(cache_dir).expanduser()


def stable_hash(*parts: object, digest_size: int = 16) -> str:
    """Hex blake2b of JSON-encodable parts: a cache key that is the same in every process."""
    payload = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(payload, digest_size=digest_size).hexdigest()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing); others block until we leave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
