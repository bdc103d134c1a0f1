"""init_seed and data_seed, from the batches themselves: what every model of a trial is given (batch_recorder's hook
on the model, not the loader's word), across seeds, architectures and DDP world sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from batch_recorder import record

from trainables.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(
    n_layer=2,
    n_embd=64,
    n_head=4,
    seq_len=64,
    batch_size=4,
    max_steps=6,
    eval_every=100,  # past max_steps: the one eval is the final one
    eval_batches=2,
    tokenizer="bpe:512",
    warmup_steps=2,
    probes=False,
    checkpoint=False,
)


def test_the_two_seeds_default_to_the_trial_seed_and_are_checked():
    assert (TrainConfig(seed=5).init_seed, TrainConfig(seed=5).data_seed) == (5, 5)
    tc = TrainConfig(seed=5, data_seed=0)
    assert (tc.init_seed, tc.data_seed) == (5, 0)
    for bad in (-1, 2**32, 1.5, True):
        with pytest.raises(ValueError, match=r"TrainConfig\.init_seed="):
            TrainConfig(init_seed=bad)


@pytest.fixture(scope="module")
def runs(token_cache):
    """One trial per case: its recorded batches and first weights."""
    cases = dict(
        base=dict(seed=0),
        nano=dict(seed=0, nanohead_proportion=0.25, nanohead_dim=4),  # a quarter of the query width in 4-wide heads
        softmax1=dict(seed=0, softmax1=True),
        other_init=dict(seed=0, init_seed=1),
        other_data=dict(seed=0, data_seed=1),
        seed3=dict(seed=3),
        split3=dict(seed=0, init_seed=3, data_seed=3),
    )
    return {name: record({**TINY, **extra}) for name, extra in cases.items()}


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_arms_with_one_data_seed_see_the_same_batches_and_val_tokens_whatever_the_model(runs):
    base = runs["base"]
    assert len(base["train"]) == TINY["max_steps"] and len(base["val"]) == TINY["eval_batches"]
    for arm in ("nano", "softmax1", "other_init"):
        assert _same(runs[arm]["train"], base["train"]), arm
        assert _same(runs[arm]["val"], base["val"]), arm
    for arm in ("nano", "softmax1"):  # truly other models: the same tokens, another loss
        assert runs[arm]["final"]["val_loss"] != base["final"]["val_loss"], arm
    # another data seed: other batches, the same val windows (they are fixed: the start of the val split)
    assert not any(torch.equal(x, y) for x, y in zip(runs["other_data"]["train"], base["train"]))
    assert _same(runs["other_data"]["val"], base["val"])


def test_init_seed_alone_sets_the_weights(runs):
    assert runs["other_data"]["init"] == runs["base"]["init"]  # data seed 1, init seed 0: the same start
    assert runs["other_init"]["init"] != runs["base"]["init"]


def test_seed_works_only_through_the_two_seeds(runs):
    # seed=3 is init_seed=data_seed=3 exactly: the same batches, the same weights, the same final numbers
    a, b = runs["seed3"], runs["split3"]
    assert _same(a["train"], b["train"]) and a["init"] == b["init"]
    assert a["final"]["val_loss"] == b["final"]["val_loss"] and a["final"]["train_loss"] == b["final"]["train_loss"]


def test_config_json_records_the_seeds_used(token_cache, tmp_path):
    from trainables.train import train

    train({**TINY, "max_steps": 1, "seed": 2, "data_seed": 7}, out_dir=str(tmp_path), log=lambda m: None)
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert (recorded["train"]["seed"], recorded["train"]["init_seed"], recorded["train"]["data_seed"]) == (2, 2, 7)
    assert "init_seed" not in recorded["trial"]  # the trial's config as given; the resolved seeds are the train's


def _torchrun(config: dict, out: Path, world: int) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"]
    cmd += [str(Path(__file__).with_name("batch_recorder.py")), json.dumps(config), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


def test_world_sizes_with_one_global_batch_train_and_score_on_the_same_tokens(runs, tmp_path):
    """Two ranks of 4 sequences vs one worker accumulating two micro-steps of 4 (the same total_batch_tokens): each
    optimizer step trains on the same 8 windows, rank r's being the r-th micro-step's, and the val windows are the
    same (their count follows the per-worker batch_size, not the world size). One worker with batch 8 trains on
    the same windows too, but scores on twice as many val windows."""
    step_tokens = 2 * TINY["batch_size"] * TINY["seq_len"]
    config = {**TINY, "total_batch_tokens": step_tokens}
    ranks = _torchrun(config, tmp_path, world=2)
    accum = record(config)
    wide = record({**TINY, "batch_size": 2 * TINY["batch_size"]})
    assert len(ranks[0]["train"]) == len(ranks[1]["train"]) == TINY["max_steps"] == len(wide["train"])
    assert len(accum["train"]) == 2 * TINY["max_steps"]
    for step in range(TINY["max_steps"]):
        both_ranks = torch.cat([ranks[0]["train"][step], ranks[1]["train"][step]])
        assert torch.equal(both_ranks, torch.cat(accum["train"][2 * step : 2 * step + 2])), step
        assert torch.equal(both_ranks, wide["train"][step]), step
    # val: rank r scores every 2nd of the eval batches; together the single worker's
    assert [len(r["val"]) for r in ranks] == [1, 1]
    assert _same([ranks[0]["val"][0], ranks[1]["val"][0]], accum["val"])
    assert torch.equal(torch.cat(wide["val"])[: 2 * TINY["batch_size"]], torch.cat(accum["val"]))
    # the same weights, batches and val tokens: the same result up to the order of float sums
    assert ranks[0]["init"] == accum["init"]
    assert ranks[0]["final"]["val_loss"] == pytest.approx(accum["final"]["val_loss"], abs=1e-4)
