"""Every bad input is a DataError (a ValueError) naming the file or value, before any training,
with nothing written to the cache but lock files."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainables.data import DataError, get_tokenizer, load_corpus, prepare_tokens

TEXT = ["The cat sat on the mat.", "A dog ran in the park."]


def _cache_files(cache):
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and p.suffix != ".lock")


def _write_jsonl(path, docs):
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return str(path)


def _fails(source, tokenizer, cache, match):
    with pytest.raises(DataError, match=match) as info:
        prepare_tokens(source, tokenizer, cache_dir=cache)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    assert _cache_files(cache) == []
    return str(info.value)


def test_missing_path(tmp_path):
    missing = str(tmp_path / "nope" / "corpus.jsonl")
    msg = _fails(missing, "gpt2", tmp_path / "cache", "no such file")
    assert missing in msg and "wiki" in msg
    _fails(str(tmp_path / "*.parquet"), "gpt2", tmp_path / "cache", "matches no")


def test_empty_corpus(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("  \n\n ", encoding="utf-8")
    _write_jsonl(tmp_path / "empty" / "b.jsonl", ["", "   "])
    msg = _fails(str(tmp_path / "empty"), "gpt2", tmp_path / "cache", "empty")
    assert str(tmp_path / "empty") in msg
    (tmp_path / "nothing").mkdir()
    _fails(str(tmp_path / "nothing"), "gpt2", tmp_path / "cache", "no .txt/.jsonl/.parquet")


def test_parquet_without_text_column(tmp_path):
    path = tmp_path / "shard.parquet"
    pq.write_table(pa.table({"content": TEXT, "url": ["a", "b"]}), path)
    msg = _fails(str(path), "gpt2", tmp_path / "cache", "no 'text' column")
    assert str(path) in msg and "content, url" in msg


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Un café au lait, s'il vous plaît.".encode("latin-1"))
    msg = _fails(str(path), "gpt2", tmp_path / "cache", "not UTF-8")
    assert str(path) in msg and "0xe9" in msg and "offset 6" in msg


def test_unknown_tokenizer(tmp_path):
    src = _write_jsonl(tmp_path / "c.jsonl", TEXT)
    for name in ("gpt5", "bpe:abc", "BPE:512", ""):
        msg = _fails(src, name, tmp_path / "cache", "unknown tokenizer")
        assert repr(name) in msg and "gpt2, cl100k_base, o200k_base" in msg
    _fails(src, "bpe:70000", tmp_path / "cache", "'bpe:70000'.*257..65536")
    with pytest.raises(DataError, match="corpus"):
        get_tokenizer("bpe:512")  # a custom BPE needs a corpus to train on


def test_vocab_larger_than_the_corpus_supports(tmp_path):
    # caught before training: two short sentences hold far fewer than 4096 - 257 merges
    src = _write_jsonl(tmp_path / "tiny.jsonl", TEXT)
    msg = _fails(src, "bpe:4096", tmp_path / "cache", "bpe:4096.*too small")
    assert src in msg
    # caught by rustbpe running out of pairs: lots of bytes, few distinct words
    words = ["ab ab ab ab " * 200, "cd cd ab cd " * 200]
    src = _write_jsonl(tmp_path / "repetitive.jsonl", words)
    msg = _fails(src, "bpe:600", tmp_path / "cache", "bpe:600.*supports at most")
    assert src in msg


def test_bad_jsonl_lines_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": TEXT[0]}) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        load_corpus(str(path))
    path.write_text(json.dumps({"body": TEXT[0]}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:1: expected an object with a string 'text'"):
        load_corpus(str(path))
    with pytest.raises(DataError, match="unsupported type '.csv'"):
        (tmp_path / "x.csv").write_text("text\nhello\n")
        load_corpus(str(tmp_path / "x.csv"))


def test_hub_without_datasets_says_how_to_install():
    # the hub path itself needs a network; what we can check offline is the missing extra
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match=r"pip install -e \.\[hub\]"):
            load_corpus("hf:roneneldan/TinyStories")
    else:
        pytest.skip("datasets is installed; loading would need the network")
