"""Checkpoints load with torch.load(weights_only=True): the RNG states they carry are plain data that still
continue every random stream exactly, and a checkpoint holding a pickled object that would run code is refused."""

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.train import CHECKPOINT_FILE, rng_state, set_rng_state, train

TINY = dict(
    n_layer=2,
    n_embd=64,
    n_head=4,
    seq_len=64,
    batch_size=8,
    max_steps=10,
    eval_every=10,
    eval_batches=2,
    tokenizer="bpe:512",
    lr=3e-3,
    warmup_steps=5,
)


def draws() -> list:
    """The next values of every stream a training step may use; gauss() and standard_normal() also use the
    cached second normal each generator keeps in its state."""
    return [
        random.random(),
        random.gauss(0, 1),
        random.getrandbits(64),
        *np.random.rand(3).tolist(),
        *np.random.standard_normal(3).tolist(),
        *torch.rand(3).tolist(),
        *torch.randn(3).tolist(),
    ]


def test_rng_round_trip_through_a_weights_only_checkpoint_continues_every_stream(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    draws()
    random.gauss(0, 1), np.random.standard_normal()  # leave a cached normal in both states
    torch.save(rng_state(), tmp_path / "rng.pt")
    uninterrupted = draws()
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # another process, other streams
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == uninterrupted


class RunsCode:
    """Unpickling this calls Path.touch(marker): what a planted checkpoint could do with any callable."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_checkpoint_with_a_pickled_object_is_refused(token_cache, tmp_path):
    marker = tmp_path / "code_ran"
    planted = tmp_path / "planted"
    planted.mkdir()
    torch.save({"model": RunsCode(marker), "step": 0}, planted / CHECKPOINT_FILE)
    torch.load(planted / CHECKPOINT_FILE, weights_only=False)  # the reference: a full unpickle runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError):
        train(TINY, restore=str(planted), log=lambda m: None)
    assert not marker.exists()
