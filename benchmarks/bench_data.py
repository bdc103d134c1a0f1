"""Data pipeline benchmark: corpus preparation and loader speed on the embedded wiki corpus.

    python benchmarks/bench_data.py [--tokenizers bpe:4096 gpt2] [--loader-batches 2000]

Baselines are measured in the same run: shard encoding (batched, threaded, written to a
memmap) against a plain single-process `enc.encode_ordinary` loop over the same documents;
the loader against the ~15k tokens/s a small model trains at on CPU (the loader must not be
the bottleneck, so that ratio should be >> 1).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from trainables.data import TokenLoader, get_tokenizer, load_corpus, prepare_tokens, split_documents
from trainables.data.tokens import _encode_split

TRAIN_RATE = 15_000  # tokens/s: upper end of a CPU training step rate for the studies' models


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def best_of(n: int, fn) -> float:
    return min(timed(fn)[1] for _ in range(n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizers", nargs="+", default=["bpe:4096", "gpt2"])
    ap.add_argument("--loader-batches", type=int, default=2000)
    args = ap.parse_args()

    corpus, t_load = timed(lambda: load_corpus("wiki"))
    train_docs, _ = split_documents(corpus.documents)
    mb = corpus.n_bytes / 1e6
    mb_train = sum(len(d.encode()) for d in train_docs) / 1e6
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"corpus wiki: {len(corpus.documents)} docs, {mb:.2f} MB ({mb_train:.2f} MB train); "
        f"{threads} CPU threads available\n"
    )

    rows = [("load wiki corpus", t_load, mb, "")]
    for name in args.tokenizers:
        with tempfile.TemporaryDirectory() as cache:
            enc, t_tok = timed(lambda: get_tokenizer(name, corpus, cache_dir=cache))
            data, t_shards = timed(lambda: prepare_tokens("wiki", name, cache_dir=cache))
            _, t_hit = timed(lambda: prepare_tokens("wiki", name, cache_dir=cache))
            out = os.path.join(cache, "bench.bin")
            t_encode = best_of(3, lambda: _encode_split(corpus.documents, enc, 0, data.dtype, Path(out)))
            t_base = best_of(3, lambda: [enc.encode_ordinary(d) for d in corpus.documents])
            verb = "train (rustbpe, train split)" if name.startswith("bpe:") else "build from package files"
            rows += [
                (f"{name} tokenizer {verb}", t_tok, mb_train if name.startswith("bpe:") else mb, ""),
                (f"{name} shards: load+split+encode+write", t_shards, mb, f"{t_base / t_shards:.2f}x"),
                (f"{name}   of which encode+write (threads)", t_encode, mb, f"{t_base / t_encode:.2f}x"),
                (f"{name} baseline: encode_ordinary loop, 1 thread", t_base, mb, "1.00x"),
                (f"{name} total cold prepare (tokenizer + shards)", t_tok + t_shards, mb, ""),
                (f"{name} cache hit (load corpus, check key)", t_hit, mb, ""),
            ]
            if name == args.tokenizers[0]:
                loader_data = data
                tokens_per_mb = (data.n_train_tokens + data.n_val_tokens) / mb
                loader_rows = bench_loader(loader_data, args.loader_batches)

    print(f"{'stage':<50} {'seconds':>8} {'MB/s':>8}  vs baseline")
    for stage, secs, size, note in rows:
        print(f"{stage:<50} {secs:8.3f} {size / secs:8.2f}  {note}")
    print(f"\n({args.tokenizers[0]}: {tokens_per_mb / 1e3:.0f}k tokens per MB of text)")
    print(
        f"\n{'loader (' + loader_data.tokenizer + ', batch 8 x seq 256)':<50} {'batch/s':>8} {'tok/s':>11}  vs {TRAIN_RATE // 1000}k tok/s training"
    )
    for stage, bps, tps in loader_rows:
        print(f"{stage:<50} {bps:8.0f} {tps:11.0f}  {tps / TRAIN_RATE:.0f}x")


def bench_loader(data, n_batches: int) -> list[tuple[str, float, float]]:
    rows = []
    for label, rank, world in (("rank 0 of 1", 0, 1), ("rank 1 of 2", 1, 2)):
        loader = TokenLoader(data, batch_size=8, seq_len=256, rank=rank, world_size=world, seed=0)
        next(loader)  # first epoch's permutation
        _, secs = timed(lambda: [next(loader) for _ in range(n_batches)])
        rows.append((label, n_batches / secs, n_batches * 8 * 256 / secs))
    return rows


if __name__ == "__main__":
    main()
