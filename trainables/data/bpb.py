"""Validation bits per byte: the study's primary metric, comparable across tokenizers.

bpb = sum(cross-entropy nats of target tokens) / (ln 2 * sum(UTF-8 bytes of those tokens)),
where target tokens of 0 bytes (BOS/special tokens) are left out of both sums, as in
nanochat's loss_eval.py. A model with a bigger vocab predicts fewer, longer tokens; dividing
by bytes instead of tokens cancels that out.

The val windows are fixed: contiguous, non-overlapping targets from the start of the val
split (window i is tokens [i*T, i*T+T]), so every trial is scored on the same tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from .corpus import DataError
from .tokens import TokenData


def val_batches(
    data: TokenData, batch_size: int, seq_len: int, max_batches: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed val (x, y) batches; the last one may hold fewer than batch_size windows."""
    tokens = data.val_tokens()
    n_windows = (len(tokens) - 1) // seq_len
    if n_windows == 0:
        raise DataError(
            f"val split has {len(tokens)} tokens, fewer than seq_len+1={seq_len + 1}; "
            "use a larger val_fraction or a smaller seq_len"
        )
    n_batches = math.ceil(n_windows / batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    for b in range(n_batches):
        lo, hi = b * batch_size, min((b + 1) * batch_size, n_windows)
        # Read only this batch from the memmap; rows are windows i*T .. i*T+T (T+1 tokens).
        chunk = torch.from_numpy(tokens[lo * seq_len : hi * seq_len + 1].astype(np.int64))
        w = chunk.unfold(0, seq_len + 1, seq_len)
        yield w[:, :-1].contiguous(), w[:, 1:].contiguous()


@torch.no_grad()
def evaluate_bpb(
    model: torch.nn.Module,
    data: TokenData,
    batch_size: int,
    seq_len: int,
    max_batches: int | None = None,
    device: str | torch.device = "cpu",
    *,
    rank: int = 0,
    world_size: int = 1,
) -> dict:
    """Mean val loss (nats/token) and bits per byte over the fixed val windows.

    model(x, y, loss_reduction="none") must return per-token losses [B, T] in nats.
    With world_size > 1 each rank scores every world_size-th batch and, when torch.distributed
    is initialised, the sums are all-reduced so every rank returns the whole set's numbers.
    val_loss and tokens count the same tokens as bpb: targets with at least one byte.
    """
    token_bytes = data.token_bytes().to(device=device, dtype=torch.int64)
    nats = torch.zeros((), dtype=torch.float64, device=device)
    nbytes = torch.zeros((), dtype=torch.int64, device=device)
    ntokens = torch.zeros((), dtype=torch.int64, device=device)
    was_training = model.training
    model.eval()
    try:
        for b, (x, y) in enumerate(val_batches(data, batch_size, seq_len, max_batches)):
            if b % world_size != rank:
                continue
            x, y = x.to(device), y.to(device)
            loss = model(x, y, loss_reduction="none").to(torch.float64)
            y_bytes = token_bytes[y]
            counted = y_bytes > 0
            nats += torch.where(counted, loss, 0.0).sum()
            nbytes += y_bytes.sum()
            ntokens += counted.sum()
    finally:
        model.train(was_training)
    import torch.distributed as dist

    if world_size > 1 and dist.is_available() and dist.is_initialized():
        for t in (nats, nbytes, ntokens):
            dist.all_reduce(t)
    nats_f, bytes_i, tokens_i = nats.item(), int(nbytes.item()), int(ntokens.item())
    return {
        "val_loss": nats_f / tokens_i if tokens_i else float("inf"),
        "val_bpb": nats_f / (math.log(2) * bytes_i) if bytes_i else float("inf"),
        "tokens": tokens_i,
        "bytes": bytes_i,
    }
