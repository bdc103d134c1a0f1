"""--seeds N in an Optuna search: one trial trains its config with N seeds in lockstep and reports their mean at every
eval (so ASHA and the sampler judge the config, not one draw of noise); --set confirm_top=K confirm_seeds=M re-runs
the K best configs with M seeds after the search."""

import json
import shutil
from pathlib import Path

import pytest

from trainables.storage import read_jsonl

TINY = dict(
    n_layer=2,
    n_embd=64,
    n_head=4,
    seq_len=64,
    batch_size=4,
    max_steps=6,
    eval_every=3,
    eval_batches=2,
    tokenizer="bpe:512",
    warmup_steps=2,
    probes=False,
)


def _lines(path: Path) -> list[dict]:
    return read_jsonl(path)[0]


def test_the_reported_value_is_the_mean_of_the_seeds_files_and_a_resume_continues(token_cache, tmp_path):
    from trainables.train import train, train_seeds

    reported, saved = [], {}

    def report(metrics, checkpoint_dir):
        reported.append(metrics)
        if checkpoint_dir:
            saved[metrics["step"]] = shutil.copytree(checkpoint_dir, tmp_path / f"ckpt_{metrics['step']}")
            shutil.rmtree(checkpoint_dir)

    out = tmp_path / "trial"
    final = train_seeds(TINY, 2, report=report, out_dir=str(out), log=lambda m: None)
    seed0, seed1 = _lines(out / "seed0" / "metrics.jsonl"), _lines(out / "seed1" / "metrics.jsonl")
    assert [m["step"] for m in reported] == [m["step"] for m in seed0] == [m["step"] for m in seed1] == [3, 6]
    for mean, a, b in zip(reported, seed0, seed1):
        for key in ("val_bpb", "val_loss", "train_loss"):
            assert mean[key] == pytest.approx((a[key] + b[key]) / 2, rel=1e-12)
            assert (mean[f"{key}_seed0"], mean[f"{key}_seed1"]) == (a[key], b[key])
        assert mean["seeds"] == 2 and mean["params_total"] == a["params_total"]
    assert _lines(out / "metrics.jsonl") == [json.loads(json.dumps(m)) for m in reported]
    assert final == reported[-1]
    # lockstep changes no run: seed 1 alone trains the same curve (each run keeps its own RNG state between windows)
    alone = train({**TINY, "seed": 1}, log=lambda m: None)
    assert alone["val_bpb"] == pytest.approx(seed1[-1]["val_bpb"], rel=1e-6)
    # a trial killed after its first eval continues both runs from the checkpoint that holds them
    resumed = []
    again = train_seeds(
        TINY,
        2,
        report=lambda m, d: resumed.append(m) or (d and shutil.rmtree(d)),
        restore=str(saved[3]),
        out_dir=str(out),
        log=lambda m: None,
    )
    assert [m["step"] for m in resumed] == [6]
    assert again["val_bpb"] == pytest.approx(final["val_bpb"], rel=1e-6)
    assert [m["step"] for m in _lines(out / "metrics.jsonl")] == [3, 6]
