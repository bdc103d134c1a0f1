"""Token shards (encode once per corpus x tokenizer, shared by every trial) and the loader.

Cache layout, under cache_root(cache_dir)/tokens/<corpus fp>-<tokenizer>-<key>/:
    train.bin, val.bin   the split's documents as one flat token stream, each document
                         preceded by the BOS token; uint16 if n_vocab <= 65536 else uint32
    token_bytes.npy      int32[n_vocab]: UTF-8 byte length of each token, 0 for specials (bpb)
    meta.json            counts, dtype, tokenizer, corpus fingerprint (written, like the rest,
                         into a temp dir that is renamed into place: its presence = complete)
The key covers the corpus fingerprint, the tokenizer's content and the split, so a changed
corpus or tokenizer gets a new directory instead of a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiktoken
import torch

from ..storage import write_atomic
from ._cache import cache_root, file_lock, stable_hash
from .corpus import SPLIT_SALT, Corpus, DataError, hub_corpus_info, load_corpus, split_documents
from .tokenizers import bos_token_id, bpe_cache_path, get_tokenizer, parse_bpe_name

TOKENS_FORMAT = 1  # bump to invalidate cached shards when the layout changes
ENCODE_BATCH_DOCS = 16384  # documents encoded before writing: bounds memory
ENCODE_GROUP_DOCS = 256  # documents per thread task: amortises the task overhead
ESTIMATE_SAMPLE_BYTES = 1 << 20  # text a plan's token estimate encodes: a fraction of a second


@dataclass(frozen=True)
class TokenData:
    """Where a prepared (corpus, tokenizer) lives; small and picklable, so pass it to workers."""

    train_path: Path
    val_path: Path
    meta_path: Path
    token_bytes_path: Path
    vocab_size: int
    dtype: str  # "uint16" | "uint32"
    n_train_tokens: int
    n_val_tokens: int
    tokenizer: str
    corpus_fingerprint: str
    bos_id: int
    n_train_bytes: int  # UTF-8 bytes of the train documents (BOS tokens add none)
    n_val_bytes: int
    corpus: str = ""

    def train_tokens(self) -> np.memmap:
        return np.memmap(self.train_path, dtype=self.dtype, mode="r")

    def val_tokens(self) -> np.memmap:
        return np.memmap(self.val_path, dtype=self.dtype, mode="r")

    def token_bytes(self) -> torch.Tensor:
        return torch.from_numpy(np.load(self.token_bytes_path))

    @classmethod
    def from_meta(cls, meta_path: str | os.PathLike) -> TokenData:
        meta_path = Path(meta_path)
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        d = meta_path.parent
        return cls(
            train_path=d / "train.bin",
            val_path=d / "val.bin",
            meta_path=meta_path,
            token_bytes_path=d / "token_bytes.npy",
            vocab_size=meta["vocab_size"],
            dtype=meta["dtype"],
            n_train_tokens=meta["n_train_tokens"],
            n_val_tokens=meta["n_val_tokens"],
            tokenizer=meta["tokenizer"],
            corpus_fingerprint=meta["corpus_fingerprint"],
            bos_id=meta["bos_id"],
            n_train_bytes=meta["n_train_bytes"],
            n_val_bytes=meta["n_val_bytes"],
            corpus=meta["corpus"],
        )


def prepare_tokens(
    corpus_source: str = "wiki",
    tokenizer: str = "gpt2",
    cache_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.05,
) -> TokenData:
    """Load, split, tokenize (training bpe:N if needed) and cache; a cache hit does no encoding.

    Idempotent and safe to call from many processes at once: one does the work under a file
    lock, the others wait and then read its result. A hub corpus fetched before is known by the
    fingerprint its cached copy records, so a trial whose shards exist reads none of its documents.
    """
    if corpus_source.startswith("hf:") and (data := cached_tokens(corpus_source, tokenizer, cache_dir, val_fraction)):
        return data
    corpus = load_corpus(corpus_source, cache_dir=cache_dir)
    train_docs, val_docs = split_documents(corpus.documents, val_fraction)
    enc = get_tokenizer(tokenizer, corpus, cache_dir, val_fraction=val_fraction)
    token_bytes = token_byte_lengths(enc)
    root = cache_root(cache_dir) / "tokens"
    final = _shard_dir(corpus.fingerprint, tokenizer, enc, token_bytes, val_fraction, cache_dir)
    meta_path = final / "meta.json"
    if (data := _load_valid(meta_path)) is not None:
        return data
    with file_lock(root / f"{final.name}.lock"):
        if (data := _load_valid(meta_path)) is not None:  # built while we waited
            return data
        for stale in root.glob(f".{final.name}.tmp-*"):  # left by a killed process
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".{final.name}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            meta = _write_shards(tmp, enc, tokenizer, corpus, train_docs, val_docs, token_bytes)
            shutil.rmtree(final, ignore_errors=True)  # an invalid leftover, if any
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    data = _load_valid(meta_path)
    assert data is not None, f"{final} was written but does not validate: {meta}"
    return data


def _shard_dir(corpus_fp: str, tokenizer: str, enc, token_bytes, val_fraction: float, cache_dir) -> Path:
    # The key covers the corpus, what the tokenizer does and the split, so a change gets a new directory.
    key = stable_hash(
        TOKENS_FORMAT,
        corpus_fp,
        tokenizer,
        tokenizer_fingerprint(enc, token_bytes),
        val_fraction,
        SPLIT_SALT,
    )
    return cache_root(cache_dir) / "tokens" / f"{corpus_fp[:12]}-{tokenizer.replace(':', '')}-{key[:12]}"


def cached_tokens(
    corpus_source: str,
    tokenizer: str,
    cache_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.05,
    corpus: Corpus | None = None,
) -> TokenData | None:
    """The shards of (corpus, tokenizer) if they are prepared, else None; prepares and fetches nothing.
    A local corpus is read for its fingerprint (or pass it as `corpus`); a hub corpus' comes from its cached copy."""
    if corpus is not None:
        fp = corpus.fingerprint
    elif corpus_source.startswith("hf:"):
        if (info := hub_corpus_info(corpus_source, cache_dir)) is None:
            return None
        fp = info["fingerprint"]
    else:
        fp = load_corpus(corpus_source).fingerprint
    if tokenizer.startswith("bpe:"):  # a trained BPE is found by the corpus' fingerprint alone
        known = Corpus(corpus_source, [], fp)
        if not bpe_cache_path(parse_bpe_name(tokenizer), known, cache_dir, val_fraction).is_file():
            return None
        enc = get_tokenizer(tokenizer, known, cache_dir, val_fraction=val_fraction)
    else:
        enc = get_tokenizer(tokenizer)
    return _load_valid(_shard_dir(fp, tokenizer, enc, token_byte_lengths(enc), val_fraction, cache_dir) / "meta.json")


def train_tokens(
    corpus_source: str, tokenizer: str, cache_dir: str | os.PathLike | None = None, val_fraction: float = 0.05
) -> tuple[int, bool] | None:
    """Train tokens of (corpus, tokenizer) without tokenizing the corpus, for a plan: (count, True) from
    prepared shards; else (estimate, False): the train split's bytes over the bytes per token of a ~1 MB
    sample (through gpt2 for a bpe:N not trained yet), plus one BOS per document; None for a hub corpus
    not fetched yet."""
    hub = corpus_source.startswith("hf:")
    if hub and hub_corpus_info(corpus_source, cache_dir) is None:
        return None
    corpus = None if hub else load_corpus(corpus_source)  # a hub corpus' fingerprint is in its cached copy's meta
    if (data := cached_tokens(corpus_source, tokenizer, cache_dir, val_fraction, corpus=corpus)) is not None:
        return data.n_train_tokens, True
    corpus = corpus or load_corpus(corpus_source, cache_dir=cache_dir)
    train_docs, _ = split_documents(corpus.documents, val_fraction)
    trained = (
        not tokenizer.startswith("bpe:")
        or bpe_cache_path(parse_bpe_name(tokenizer), corpus, cache_dir, val_fraction).is_file()
    )
    enc = get_tokenizer(tokenizer, corpus, cache_dir, val_fraction=val_fraction) if trained else get_tokenizer("gpt2")
    n_bytes = sum(len(d.encode("utf-8")) for d in train_docs)
    sample = train_docs[:: max(1, n_bytes // ESTIMATE_SAMPLE_BYTES)]  # every k-th document: spread over the split
    bytes_per_token = sum(len(d.encode("utf-8")) for d in sample) / max(
        1, sum(len(enc.encode_ordinary(d)) for d in sample)
    )
    return round(n_bytes / bytes_per_token) + len(train_docs), False


def token_byte_lengths(enc: tiktoken.Encoding) -> np.ndarray:
    """int32[n_vocab]: byte length of each token; 0 for special tokens and unused ids."""
    special = {enc.encode_single_token(s) for s in enc.special_tokens_set}
    lengths = np.zeros(enc.n_vocab, dtype=np.int32)
    for i in range(enc.n_vocab):
        if i not in special:
            try:
                lengths[i] = len(enc.decode_single_token_bytes(i))
            except KeyError:  # gaps in the id space (cl100k_base, o200k_base)
                pass
    return lengths


def tokenizer_fingerprint(enc: tiktoken.Encoding, token_bytes: np.ndarray) -> str:
    """Hash of what the tokenizer does (pattern, specials, every token's bytes), not its name."""
    h = hashlib.blake2b(digest_size=16)
    h.update(enc._pat_str.encode())  # tiktoken has no public getter for the pattern
    for s in sorted(enc.special_tokens_set):
        h.update(f"{s}={enc.encode_single_token(s)};".encode())
    for i in np.flatnonzero(token_bytes):
        h.update(int(i).to_bytes(4, "little") + enc.decode_single_token_bytes(int(i)))
    return h.hexdigest()


def _write_shards(out: Path, enc, tokenizer: str, corpus, train_docs, val_docs, token_bytes) -> dict:
    dtype = "uint16" if enc.n_vocab <= 2**16 else "uint32"
    bos = bos_token_id(enc)
    n_train = _encode_split(train_docs, enc, bos, dtype, out / "train.bin")
    n_val = _encode_split(val_docs, enc, bos, dtype, out / "val.bin")
    np.save(out / "token_bytes.npy", token_bytes)
    meta = {
        "format": TOKENS_FORMAT,
        "corpus": corpus.name,
        "corpus_fingerprint": corpus.fingerprint,
        "tokenizer": tokenizer,
        "vocab_size": enc.n_vocab,
        "dtype": dtype,
        "bos_id": bos,
        "n_train_tokens": n_train,
        "n_val_tokens": n_val,
        "n_train_docs": len(train_docs),
        "n_val_docs": len(val_docs),
        "n_train_bytes": sum(len(d.encode("utf-8")) for d in train_docs),
        "n_val_bytes": sum(len(d.encode("utf-8")) for d in val_docs),
    }
    write_atomic(out / "meta.json", json.dumps(meta, indent=1))
    return meta


def _encode_split(docs: list[str], enc, bos: int, dtype: str, path: Path) -> int:
    """Stream [BOS, doc tokens...] for every document into `path`; returns the token count.

    Threads over contiguous groups of documents: tiktoken releases the GIL while encoding, so
    they run in parallel. (enc.encode_ordinary_batch submits one future per document, which
    on short documents like wiki leads costs more than the encoding: ~2x a plain loop.)
    """
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def encode_group(group: list[str]) -> np.ndarray:
        flat: list[int] = []
        for doc in group:
            flat.append(bos)
            flat.extend(enc.encode_ordinary(doc))
        return np.asarray(flat, dtype=dtype)

    n = 0
    with open(path, "wb") as f, ThreadPoolExecutor(threads) as pool:
        # Bounded batches keep memory flat on big corpora; map() keeps document order.
        for i in range(0, len(docs), ENCODE_BATCH_DOCS):
            batch = docs[i : i + ENCODE_BATCH_DOCS]
            groups = [batch[j : j + ENCODE_GROUP_DOCS] for j in range(0, len(batch), ENCODE_GROUP_DOCS)]
            for ids in pool.map(encode_group, groups):
                ids.tofile(f)
                n += len(ids)
        f.flush()
        os.fsync(f.fileno())
    return n


def _load_valid(meta_path: Path) -> TokenData | None:
    """The cached TokenData if meta.json exists and the files have the sizes it promises."""
    if not meta_path.is_file():
        return None
    try:
        data = TokenData.from_meta(meta_path)
        itemsize = np.dtype(data.dtype).itemsize
        ok = (
            data.train_path.stat().st_size == data.n_train_tokens * itemsize
            and data.val_path.stat().st_size == data.n_val_tokens * itemsize
            and data.token_bytes_path.is_file()
        )
    except (OSError, KeyError, ValueError):
        return None
    return data if ok else None


# ---- loader -----------------------------------------------------------------------------


class TokenLoader:
    """Random windows of seq_len+1 train tokens, as (x, y) int64 [batch_size, seq_len].

    The train stream is cut into windows that start every seq_len tokens (each token is a
    target exactly once per epoch). Every epoch visits the windows in an order drawn from
    (seed, epoch) alone: the model never enters it. Step s of an epoch uses the slice
    [s*W*B, (s+1)*W*B) of that order, and rank r takes its r-th B windows, so ranks never share
    a window and together see exactly what one rank with batch W*B would. An epoch ends on a
    whole optimizer step of accum_steps (A) micro-steps, its tail that does not fill W*A*B
    windows dropped, so every rank runs the same number of steps (DDP needs that) and optimizer
    step j is the slice [j*G, (j+1)*G) of the order, G = W*A*B: any world size, micro-batch and
    accumulation with the same G and seed train on the same windows at every optimizer step.
    Position = (epoch, step), the same on every rank, so a state saved by rank 0 restores any rank.
    """

    def __init__(
        self,
        data: TokenData,
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        accum_steps: int = 1,
    ):
        for field, value in (
            ("batch_size", batch_size),
            ("seq_len", seq_len),
            ("world_size", world_size),
            ("accum_steps", accum_steps),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TokenLoader {field}={value!r}: must be a positive int")
        if not 0 <= rank < world_size:
            raise ValueError(f"TokenLoader rank={rank!r}: must be in [0, world_size={world_size})")
        self.data, self.batch_size, self.seq_len = data, batch_size, seq_len
        self.rank, self.world_size, self.seed, self.accum_steps = rank, world_size, seed, accum_steps
        self.tokens = data.train_tokens()
        self.n_windows = (len(self.tokens) - 1) // seq_len
        self.steps_per_epoch = self.n_windows // (batch_size * world_size * accum_steps) * accum_steps
        if self.steps_per_epoch == 0:
            raise DataError(
                f"train split has {len(self.tokens)} tokens: too few for {world_size} x {accum_steps} x "
                f"{batch_size} windows of seq_len+1={seq_len + 1}; use a bigger corpus or smaller batch/seq_len"
            )
        self.epoch, self.step = 0, 0
        self._order_epoch, self._order = -1, np.empty(0, dtype=np.int64)

    @property
    def tokens_served(self) -> int:
        """Target tokens this rank has yielded (all ranks together: x world_size)."""
        return (self.epoch * self.steps_per_epoch + self.step) * self.batch_size * self.seq_len

    def window_order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order, self._order_epoch = rng.permutation(self.n_windows), epoch
        return self._order

    def next_windows(self) -> np.ndarray:
        """Window indices of the next batch (advances the position)."""
        if self.step == self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        start = (self.step * self.world_size + self.rank) * self.batch_size
        idx = self.window_order(self.epoch)[start : start + self.batch_size]
        self.step += 1
        return idx

    def __iter__(self) -> TokenLoader:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.seq_len
        buf = np.stack([self.tokens[i * T : i * T + T + 1] for i in self.next_windows()])
        buf = torch.from_numpy(buf.astype(np.int64))
        return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "tokens_served": self.tokens_served,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "world_size": self.world_size,
            "accum_steps": self.accum_steps,
            "n_train_tokens": len(self.tokens),
        }

    def load_state_dict(self, state: dict) -> None:
        # A different order or window layout would silently repeat/skip data: refuse it.
        state = {"accum_steps": 1, **state}  # a state from before accum_steps: epochs of single micro-steps
        for field in ("seed", "batch_size", "seq_len", "world_size", "accum_steps", "n_train_tokens"):
            mine = self.state_dict()[field]
            if state[field] != mine:
                raise ValueError(f"TokenLoader state {field}={state[field]!r} differs from this loader's {mine!r}")
        if not 0 <= state["step"] <= self.steps_per_epoch:
            raise ValueError(f"TokenLoader state step={state['step']!r}: must be in [0, {self.steps_per_epoch}]")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
