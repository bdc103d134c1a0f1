"""Where a study's files live: a folder (local, or a shared filesystem every node mounts), or a cloud URI
(s3://, gs://, abfs://, hdfs://) reached through pyarrow.fs, the filesystem layer Ray Tune uses for its
own storage_path.

With a URI, Tune writes its experiment state and checkpoints there itself; what our code writes (a trial's
metrics.jsonl, config.json, samples.json, ...; the study's study.json, trials.parquet, report) is written
into a local folder first and mirrored up: object stores cannot append to a file, and plain files keep
train.py, results.py and reports/ free of any storage layer. Credentials and endpoints come from the
environment the way pyarrow reads them (AWS_* incl. AWS_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS, ...);
none of them is ever written into a file.
"""

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs as pafs


def write_atomic(
    path: str | os.PathLike, data: str | bytes | None = None, *, writer: Callable[[Path], object] | None = None
):
    """Writes the file at path whole or not at all: a reader, or whatever a crash leaves, sees the old file or
    the new one, never part of one. Give the content as data (str is written as UTF-8), or a writer(tmp_path)
    that writes it (pandas' to_parquet and to_csv want a path)."""
    if (data is None) == (writer is None):
        raise TypeError("write_atomic takes data or writer, not both or neither")
    path = Path(path)
    # beside path: os.replace is atomic only within one filesystem; the leading "." makes Mirror skip it
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        if writer is None:
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        else:
            writer(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the content reaches the disk before the rename can
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_jsonl(path: str | os.PathLike) -> tuple[list[dict], int]:
    """(the JSON objects of a .jsonl file, how many lines were skipped as unreadable): a process killed while
    appending leaves a torn last line, which is dropped here instead of failing the whole file."""
    records, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                bad += 1
    return records, bad


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def join(root: str, *parts: str) -> str:
    """A path under a URI or a folder (a URI's query string, e.g. ?endpoint_override=..., stays at the end)."""
    base, sep, query = str(root).partition("?")
    return "/".join([base.rstrip("/"), *parts]) + sep + query


def open_location(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a URI or a local path. Raises ValueError for a URI pyarrow cannot
    read (unknown scheme, no bucket), OSError where the scheme is known but its filesystem cannot be made."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), str(Path(location).resolve())
    fs, path = pafs.FileSystem.from_uri(location)
    if not path.strip("/"):
        raise ValueError("no bucket or path after the scheme")
    return fs, path.rstrip("/")


def _files(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    info = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return [f for f in info if f.type == pafs.FileType.File]


def _copy(src_fs, src: str, dst_fs, dst: str):
    parent = dst.rsplit("/", 1)[0]
    dst_fs.create_dir(parent, recursive=True)
    with src_fs.open_input_stream(src) as fin, dst_fs.open_output_stream(dst) as fout:
        while chunk := fin.read(8 << 20):
            fout.write(chunk)


def pull(location: str, local: Path, skip=lambda rel: False):
    """Copies the files under location (a URI) into the folder local, except those whose relative path
    skip(rel) refuses."""
    fs, root = open_location(location)
    for f in _files(fs, root):
        rel = f.path[len(root) :].lstrip("/")
        if rel and not skip(rel):
            _copy(fs, f.path, pafs.LocalFileSystem(), str(Path(local) / rel))


def pull_changed(location: str, local: Path, seen: dict, keep=lambda rel: True) -> dict:
    """Brings the folder local up to date with the files under location (a URI) that keep(rel) accepts: copies
    those whose size or modification time differ from seen's record (rel -> (size, mtime)), removes the copies
    of files gone from location, and returns the new record (a reader polling a study re-fetches only what grew)."""
    fs, root = open_location(location)
    now = {}
    for f in _files(fs, root):
        rel = f.path[len(root) :].lstrip("/")
        if not rel or not keep(rel):
            continue
        sig = (f.size, f.mtime_ns)
        if seen.get(rel) != sig:
            dst = Path(local) / rel
            tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            _copy(fs, f.path, pafs.LocalFileSystem(), str(tmp))
            if f.mtime_ns is not None:  # the copy keeps the store's time: when the file was last written there
                os.utime(tmp, ns=(f.mtime_ns, f.mtime_ns))
            os.replace(tmp, dst)  # a reader of the copy sees the old file or the new one, never part of one
        now[rel] = sig
    for rel in set(seen) - set(now):
        (Path(local) / rel).unlink(missing_ok=True)
    return now


class Mirror:
    """A local folder kept mirrored to a URI: push() uploads the files that changed since the last push or
    pull (by size and mtime), so a trial that reports every few seconds re-sends only its metrics.jsonl.
    With uri None the folder is the storage itself and both calls do nothing."""

    def __init__(self, local: str | os.PathLike, uri: str | None, skip=lambda rel: False):
        self.local, self.uri, self.skip = Path(local), uri, skip
        self._sent: dict[str, tuple[int, int]] = {}

    def pull(self):
        """The folder becomes what the URI holds (a trial restarted elsewhere continues its own files)."""
        if self.uri is None:
            return
        shutil.rmtree(self.local, ignore_errors=True)
        self.local.mkdir(parents=True, exist_ok=True)
        pull(self.uri, self.local, self.skip)
        self._sent = self._local_files()

    def push(self):
        if self.uri is None or not self.local.is_dir():
            return
        fs, root = open_location(self.uri)
        for rel, sig in self._local_files().items():
            if self._sent.get(rel) != sig:
                try:
                    _copy(pafs.LocalFileSystem(), str(self.local / rel), fs, f"{root}/{rel}")
                except FileNotFoundError:  # removed since it was listed: nothing left to send
                    continue
                self._sent[rel] = sig

    def close(self):
        """Pushes, then drops the local copy of a URI's files (a folder that is the storage itself stays)."""
        self.push()
        if self.uri is not None:
            shutil.rmtree(self.local, ignore_errors=True)

    def _local_files(self) -> dict[str, tuple[int, int]]:
        out = {}
        for dirpath, _, filenames in os.walk(self.local):
            for name in filenames:
                path = Path(dirpath) / name
                rel = path.relative_to(self.local).as_posix()
                if self.skip(rel) or name.startswith("."):  # .tmp files are still being written
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:  # removed between the listing and now
                    continue
                out[rel] = (st.st_size, st.st_mtime_ns)
        return out
