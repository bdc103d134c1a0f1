import itertools

import numpy as np
import pytest
import torch

from trainables.data import DataError, TokenLoader

B, T = 4, 16


def _windows(loader, n_steps):
    """Each window as a tuple of its T+1 tokens (x row + last y)."""
    out = []
    for x, y in itertools.islice(loader, n_steps):
        assert x.shape == y.shape == (loader.batch_size, T) and x.dtype == y.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        out += [tuple(row) for row in torch.cat([x, y[:, -1:]], dim=1).tolist()]
    return out


def _all_windows(data):
    """Reference: window i = train tokens [i*T, i*T+T] for every full window."""
    tokens = data.train_tokens().tolist()
    return [tuple(tokens[i * T : i * T + T + 1]) for i in range((len(tokens) - 1) // T)]


def test_one_epoch_visits_every_window_once(small_gpt2):
    every = _all_windows(small_gpt2)
    assert len(set(every)) == len(every)  # windows are distinguishable by content
    loader = TokenLoader(small_gpt2, batch_size=1, seq_len=T, seed=0)
    assert loader.steps_per_epoch == len(every)
    epoch0 = _windows(loader, len(every))
    assert sorted(epoch0) == sorted(every) and epoch0 != every  # all of them, shuffled
    assert loader.tokens_served == len(every) * T
    epoch1 = _windows(loader, len(every))  # reshuffled with (seed, epoch=1)
    assert sorted(epoch1) == sorted(every) and epoch1 != epoch0
    assert loader.epoch == 1 and loader.tokens_served == 2 * len(every) * T


def test_deterministic_for_a_seed(small_gpt2):
    a = _windows(TokenLoader(small_gpt2, B, T, seed=7), 30)
    assert a == _windows(TokenLoader(small_gpt2, B, T, seed=7), 30)
    assert a != _windows(TokenLoader(small_gpt2, B, T, seed=8), 30)


def test_ranks_are_disjoint_and_cover_the_single_rank_world(small_gpt2):
    world = 2
    ranks = [TokenLoader(small_gpt2, B, T, rank=r, world_size=world, seed=3) for r in range(world)]
    single = TokenLoader(small_gpt2, B * world, T, seed=3)
    steps = ranks[0].steps_per_epoch
    assert steps == ranks[1].steps_per_epoch == single.steps_per_epoch
    assert steps == len(_all_windows(small_gpt2)) // (B * world)
    per_rank = [_windows(r, steps) for r in ranks]
    assert set(per_rank[0]).isdisjoint(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(_windows(single, steps))
    # step by step, too: rank r's batch is the r-th slice of the single world's batch
    ranks = [TokenLoader(small_gpt2, B, T, rank=r, world_size=world, seed=3) for r in range(world)]
    for (x0, _), (x1, _), (xs, _) in itertools.islice(zip(*ranks, TokenLoader(small_gpt2, B * world, T, seed=3)), 5):
        assert torch.equal(torch.cat([x0, x1]), xs)
    assert ranks[0].tokens_served == 5 * B * T


def test_one_global_batch_is_the_same_windows_at_every_optimizer_step_whatever_the_split(small_gpt2):
    """G = world x accum_steps x batch windows per optimizer step: 2 ranks of b, 1 rank accumulating 2 micro-steps
    of b, and 1 rank of 2b train on the same windows at every step, past epoch ends too. A batch b whose epoch holds
    an odd number of micro-steps is the case to check: cut per micro-step, one optimizer step would straddle two
    epochs' orders and the single rank would drift from the two ranks."""
    n = len(_all_windows(small_gpt2))
    b = next(b for b in range(2, 64) if (n // b) % 2 == 1 and n % (2 * b) >= b)
    ranks = [TokenLoader(small_gpt2, b, T, rank=r, world_size=2, seed=4) for r in range(2)]
    accum = TokenLoader(small_gpt2, b, T, seed=4, accum_steps=2)
    wide = TokenLoader(small_gpt2, 2 * b, T, seed=4)
    steps = n // (2 * b)  # optimizer steps per epoch, the same for all three
    assert ranks[0].steps_per_epoch == wide.steps_per_epoch == steps and accum.steps_per_epoch == 2 * steps
    for step in range(2 * steps + 3):  # into the third epoch
        two_ranks = torch.cat([next(ranks[0])[0], next(ranks[1])[0]])
        assert torch.equal(two_ranks, torch.cat([next(accum)[0], next(accum)[0]])), step
        assert torch.equal(two_ranks, next(wide)[0]), step
    assert accum.epoch == ranks[0].epoch == wide.epoch == 2


def test_a_state_from_before_accum_steps_restores_a_single_micro_step_loader_only(small_gpt2):
    state = {k: v for k, v in TokenLoader(small_gpt2, B, T, seed=1).state_dict().items() if k != "accum_steps"}
    TokenLoader(small_gpt2, B, T, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="accum_steps"):
        TokenLoader(small_gpt2, B, T, seed=1, accum_steps=2).load_state_dict(state)


@pytest.mark.parametrize("stop", [3, 0, "epoch_end"])
def test_state_dict_resume_gives_the_same_next_batches(small_gpt2, stop):
    loader = TokenLoader(small_gpt2, B, T, rank=1, world_size=2, seed=5)
    stop = loader.steps_per_epoch if stop == "epoch_end" else stop
    for _ in range(stop):
        next(loader)
    state = loader.state_dict()
    assert state["tokens_served"] == stop * B * T
    expected = [next(loader) for _ in range(3)]
    resumed = TokenLoader(small_gpt2, B, T, rank=1, world_size=2, seed=5)
    resumed.load_state_dict(state)
    assert resumed.tokens_served == stop * B * T
    for (x, y), (ex, ey) in zip((next(resumed) for _ in range(3)), expected):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_state_of_rank0_restores_other_ranks_and_rejects_a_different_layout(small_gpt2):
    r0 = TokenLoader(small_gpt2, B, T, rank=0, world_size=2, seed=5)
    r1 = TokenLoader(small_gpt2, B, T, rank=1, world_size=2, seed=5)
    for _ in range(4):
        next(r0), next(r1)
    fresh = TokenLoader(small_gpt2, B, T, rank=1, world_size=2, seed=5)
    fresh.load_state_dict(r0.state_dict())  # checkpoints are usually written by rank 0
    assert torch.equal(next(fresh)[0], next(r1)[0])
    with pytest.raises(ValueError, match="seq_len"):
        TokenLoader(small_gpt2, B, T + 1, seed=5).load_state_dict(r0.state_dict())
    with pytest.raises(ValueError, match="seed"):
        TokenLoader(small_gpt2, B, T, rank=0, world_size=2, seed=6).load_state_dict(r0.state_dict())


def test_windows_are_read_from_the_memmap_exactly(small_gpt2):
    tokens = small_gpt2.train_tokens()
    x, y = next(TokenLoader(small_gpt2, B, T, seed=0))
    for row_x, row_y in zip(x.numpy(), y.numpy()):
        starts = [s for s in range(0, len(tokens) - T, T) if np.array_equal(tokens[s : s + T], row_x)]
        assert len(starts) == 1 and np.array_equal(tokens[starts[0] + 1 : starts[0] + T + 1], row_y)


def test_too_small_for_a_batch_is_a_data_error(small_gpt2):
    with pytest.raises(DataError, match="too few"):
        TokenLoader(small_gpt2, batch_size=10_000, seq_len=512)
    with pytest.raises(ValueError, match="rank"):
        TokenLoader(small_gpt2, B, T, rank=2, world_size=2)
