import hashlib
import json
import multiprocessing as mp

import numpy as np

from trainables.data import TokenData, get_tokenizer, load_corpus, prepare_tokens, split_documents
from trainables.data.tokens import token_byte_lengths


def _reference_stream(docs, enc, bos):
    """[BOS, doc tokens..., BOS, doc tokens...] by plain single-document encodes."""
    out = []
    for d in docs:
        out += [bos] + enc.encode_ordinary(d)
    return out


def test_gpt2_shards_match_a_plain_encode(small_source, small_gpt2):
    data, gpt2 = small_gpt2, get_tokenizer("gpt2")
    train_docs, val_docs = split_documents(load_corpus(small_source).documents)
    assert data.train_tokens().tolist() == _reference_stream(train_docs, gpt2, 50256)
    assert data.val_tokens().tolist() == _reference_stream(val_docs, gpt2, 50256)
    assert (data.vocab_size, data.dtype, data.bos_id, data.tokenizer) == (50257, "uint16", 50256, "gpt2")
    assert data.n_train_tokens == len(data.train_tokens()) and data.n_val_tokens == len(data.val_tokens())
    assert data.n_train_bytes == sum(len(d.encode()) for d in train_docs)
    assert data.n_val_bytes == sum(len(d.encode()) for d in val_docs)
    meta = json.loads(data.meta_path.read_text())
    assert meta["corpus_fingerprint"] == data.corpus_fingerprint == load_corpus(small_source).fingerprint
    assert meta["n_train_docs"] == len(train_docs) and meta["n_val_docs"] == len(val_docs)


def test_token_bytes_count_utf8_bytes(small_gpt2):
    tb = small_gpt2.token_bytes()
    assert tb.shape == (50257,) and tb[50256] == 0
    assert tb[15496] == len(b"Hello") and tb[995] == len(b" world")
    # every byte of every document is in exactly one non-special token
    assert int(tb[small_gpt2.train_tokens().astype(np.int64)].sum()) == small_gpt2.n_train_bytes
    assert int(tb[small_gpt2.val_tokens().astype(np.int64)].sum()) == small_gpt2.n_val_bytes


def test_token_bytes_zero_for_specials_and_gaps():
    tb = token_byte_lengths(get_tokenizer("cl100k_base"))
    assert len(tb) == 100277 and tb[100257] == 0 and tb[100265] == 0 and tb[100276] == 0
    assert tb[15339] == len(b"hello") and tb[:256].min() == 1


def test_bpe_and_wide_vocab_shards(small_source, tmp_path):
    bpe = prepare_tokens(small_source, "bpe:300", cache_dir=tmp_path)
    enc = get_tokenizer("bpe:300", load_corpus(small_source), cache_dir=tmp_path)
    train_docs, _ = split_documents(load_corpus(small_source).documents)
    assert (bpe.vocab_size, bpe.dtype, bpe.bos_id) == (300, "uint16", 299)
    assert bpe.train_tokens().tolist() == _reference_stream(train_docs, enc, 299)
    assert int(bpe.token_bytes()[bpe.train_tokens().astype(np.int64)].sum()) == bpe.n_train_bytes
    wide = prepare_tokens(small_source, "o200k_base", cache_dir=tmp_path)
    assert (wide.vocab_size, wide.dtype, wide.bos_id) == (200019, "uint32", 199999)
    assert wide.train_tokens().tolist() == _reference_stream(train_docs, get_tokenizer("o200k_base"), 199999)


def test_cache_hit_reuses_files_and_env_var(small_source, tmp_path, monkeypatch):
    monkeypatch.setenv("NANOSTUDIES_CACHE", str(tmp_path / "env-cache"))
    first = prepare_tokens(small_source, "gpt2")
    assert first.meta_path.is_relative_to(tmp_path / "env-cache")
    stamps = [p.stat().st_mtime_ns for p in (first.train_path, first.val_path, first.meta_path)]
    again = prepare_tokens(small_source, "gpt2")
    assert again == first
    assert [p.stat().st_mtime_ns for p in (again.train_path, again.val_path, again.meta_path)] == stamps
    assert TokenData.from_meta(first.meta_path) == first


def test_changed_corpus_or_tokenizer_is_a_new_cache_entry(wiki, tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in wiki.documents[:40]))
    a = prepare_tokens(str(src), "gpt2", cache_dir=tmp_path)
    b = prepare_tokens(str(src), "cl100k_base", cache_dir=tmp_path)
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in wiki.documents[:41]))
    c = prepare_tokens(str(src), "gpt2", cache_dir=tmp_path)
    assert len({a.meta_path.parent, b.meta_path.parent, c.meta_path.parent}) == 3
    assert c.corpus_fingerprint != a.corpus_fingerprint
    assert c.n_train_tokens + c.n_val_tokens > a.n_train_tokens + a.n_val_tokens


def test_truncated_cache_is_rebuilt(small_source, tmp_path):
    data = prepare_tokens(small_source, "gpt2", cache_dir=tmp_path)
    good = data.train_path.read_bytes()
    data.train_path.write_bytes(good[:100])  # e.g. a disk-full copy by hand
    rebuilt = prepare_tokens(small_source, "gpt2", cache_dir=tmp_path)
    assert rebuilt.train_path.read_bytes() == good


def _digest(data: TokenData) -> dict:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (data.train_path, data.val_path, data.meta_path, data.token_bytes_path)
    }


def _prepare_together(barrier, results, source, cache):
    barrier.wait()  # both processes are up and imported: start at the same moment
    results.put(prepare_tokens(source, "bpe:300", cache_dir=cache))


def test_concurrent_preparation_from_two_processes(small_source, tmp_path):
    """Two processes build the same bpe:300 shards in one cache dir at once: one result, intact."""
    ctx = mp.get_context("spawn")  # fork would copy rustbpe/tiktoken thread pools mid-use
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_prepare_together, args=(barrier, results, small_source, str(tmp_path))) for _ in range(2)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert got[0] == got[1]
    serial = prepare_tokens(small_source, "bpe:300", cache_dir=tmp_path / "serial")
    assert _digest(got[0]) == _digest(serial)  # same bytes as an uncontended build
    assert [p for p in tmp_path.rglob("*") if ".tmp-" in p.name] == []
    assert len(list((tmp_path / "tokenizers").glob("*.json"))) == 1
    assert len([p for p in (tmp_path / "tokens").iterdir() if p.is_dir()]) == 1
