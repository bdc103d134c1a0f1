"""The training loop without Ray: learning, schedule, checkpoint/restore against an uninterrupted run."""

import json
import math
import shutil

import pytest

from trainables.train import TrainConfig, lr_multiplier, train

TINY = dict(
    n_layer=2,
    n_embd=64,
    n_head=4,
    seq_len=64,
    batch_size=8,
    max_steps=40,
    eval_every=10,
    eval_batches=2,
    tokenizer="bpe:512",
    lr=3e-3,
    warmup_steps=5,
)


def test_loss_falls_and_metrics_are_complete(token_cache, tmp_path):
    final = train(TINY, out_dir=str(tmp_path), log=lambda m: None)
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [10, 20, 30, 40]
    assert lines[-1]["val_bpb"] < lines[0]["val_bpb"] - 0.2
    assert final["tokens"] == 40 * 8 * 64  # exact count of tokens trained
    for key in (
        "step",
        "tokens",
        "train_loss",
        "val_loss",
        "val_bpb",
        "lr",
        "tokens_per_s",
        "mfu",
        "params_total",
        "params_non_embedding",
        "flops_per_token",
        "flops",
        "wall_s",
    ):
        assert key in final
    assert final["flops"] == final["flops_per_token"] * final["tokens"]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model"]["vocab_size"] == 512 and cfg["params"]["total"] == final["params_total"]


def test_restore_continues_the_same_loss_curve(token_cache, tmp_path):
    saved = {}

    def keep(metrics, checkpoint_dir):
        if checkpoint_dir:
            saved[metrics["step"]] = shutil.copytree(checkpoint_dir, tmp_path / f"ckpt{metrics['step']}")

    uninterrupted = []
    train(TINY, report=lambda m, c: (uninterrupted.append(m), keep(m, c)), log=lambda m: None)
    resumed = []
    train(TINY, report=lambda m, c: resumed.append(m), restore=str(saved[20]), log=lambda m: None)
    assert [m["step"] for m in resumed] == [30, 40]
    for a, b in zip(uninterrupted[2:], resumed):
        assert a["tokens"] == b["tokens"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert b["val_bpb"] == pytest.approx(a["val_bpb"], abs=1e-5)
        assert b["best_val_bpb"] == pytest.approx(a["best_val_bpb"], abs=1e-5)  # the best before the restore counts
    # The best before the restore counts: a (planted) better best in the checkpoint survives the restore.
    import torch

    from trainables.train import CHECKPOINT_FILE

    state = torch.load(saved[20] / CHECKPOINT_FILE, weights_only=False)
    state["best_val_bpb"], state["best_val_loss"] = 0.5, 0.25
    torch.save(state, saved[20] / CHECKPOINT_FILE)
    planted = []
    train({**TINY, "max_steps": 30}, report=lambda m, c: planted.append(m), restore=str(saved[20]), log=lambda m: None)
    assert (planted[0]["best_val_bpb"], planted[0]["best_val_loss"]) == (0.5, 0.25)
    assert [m["best_val_loss"] for m in uninterrupted] == [
        min(m["val_loss"] for m in uninterrupted[: i + 1]) for i in range(len(uninterrupted))
    ]


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_lr_schedule_shape(schedule):
    tc = TrainConfig(schedule=schedule, warmup_steps=10, min_lr_frac=0.1, warmdown_frac=0.5)
    m = [lr_multiplier(s, tc, 100) for s in range(100)]
    assert m[0] == pytest.approx(0.1) and m[9] == pytest.approx(1.0)  # linear warmup
    assert m[-1] == pytest.approx(0.1, abs=0.02)  # ends at min_lr_frac
    if schedule == "cosine":  # halfway through the decay: (1 + 0.1) / 2
        assert m[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    else:
        assert m[40] == 1.0 and m[75] == pytest.approx(1 - 0.9 * 25 / 50)


def test_bad_train_config_names_the_field():
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="sgd")


def test_optimizer_groups_route_linear_weights_to_muon_even_when_width_equals_seq_len():
    import torch

    from trainables.model import GPT, GPTConfig
    from trainables.train import build_optimizers

    model = GPT(GPTConfig(vocab_size=64, n_layer=2, n_embd=32, n_head=4, seq_len=32, mixer="toeplitz", toep_proj=True))
    adamw, muon = build_optimizers(model, TrainConfig(optimizer="muon"))
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    linear = {id(m.weight) for m in model.transformer.h.modules() if isinstance(m, torch.nn.Linear)}
    filters = {id(b.mixer.raw) for b in model.transformer.h}
    assert in_muon == linear  # every block matrix, nothing else
    assert filters <= in_adamw and not in_muon & in_adamw  # filters (also [n_head, seq_len] = 2-D) stay in AdamW
    assert len(in_muon) + len(in_adamw) == len(list(model.parameters()))


def test_train_state_is_the_checkpoint_format(token_cache, tmp_path):
    """A checkpoint file is a TrainState's fields, nothing else, and loads without unpickling code."""
    import dataclasses

    import torch

    from trainables.train import CHECKPOINT_FILE, TrainState

    saved = []
    train(
        {**TINY, "max_steps": 10, "eval_every": 10},
        report=lambda m, c: saved.append(shutil.copytree(c, tmp_path / "ckpt")),
        log=lambda m: None,
    )
    raw = torch.load(saved[0] / CHECKPOINT_FILE, weights_only=True)
    assert set(raw) == {f.name for f in dataclasses.fields(TrainState)}
    state = TrainState.load(str(saved[0]), "cpu")
    assert (state.step, state.tokens) == (10, 10 * TINY["batch_size"] * TINY["seq_len"])
    assert len(state.loader) == len(state.rng) == 1  # one entry per rank


def test_a_run_restored_at_its_end_reports_its_last_eval_and_trains_nothing(token_cache, tmp_path):
    """Tune can start a finished trial again after a crash; restored from the final checkpoint, the run reports
    the final eval once more (Tune fails a trial that reports nothing) and leaves metrics.jsonl as it was."""
    saved, reported = {}, []
    out = tmp_path / "out"
    final = train(
        {**TINY, "max_steps": 20},
        out_dir=str(out),
        report=lambda m, c: saved.setdefault(m["step"], shutil.copytree(c, tmp_path / f"s{m['step']}")),
        log=lambda m: None,
    )
    before = (out / "metrics.jsonl").read_text()
    again = train(
        {**TINY, "max_steps": 20},
        out_dir=str(out),
        report=lambda m, c: reported.append((m, c)),
        restore=str(saved[20]),
        log=lambda m: None,
    )
    assert reported == [(final, None)] and again == final
    assert (out / "metrics.jsonl").read_text() == before
