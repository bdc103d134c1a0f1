"""Ray Tune trials that run Ray Train DDP jobs, in a real local Ray cluster (2 CPUs, gloo)."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from ray import tune

from trainables.train import train
from trainables.tune import TrialResources, make_trainable, tune_run_settings

pytestmark = pytest.mark.ray

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
    warmup_steps=5,
)


def run_study(study_dir, resources, param_space):
    tuner = tune.Tuner(
        make_trainable(study_dir, resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="val_bpb", mode="min"),
        run_config=tune.RunConfig(storage_path=str(study_dir), name="tune", verbose=0, **tune_run_settings(resources)),
    )
    return tuner.fit()


def test_ddp_trial_learns_in_sync_and_a_diverging_trial_fails_alone(ray_local, tmp_path):
    results = run_study(tmp_path, TrialResources(num_workers=2), {**TINY, "lr": tune.grid_search([3e-3, 1e30])})
    good, bad = sorted(results, key=lambda r: r.config["lr"])
    assert good.error is None
    curve = good.metrics_dataframe.dropna(subset=["step"])
    assert list(curve["step"]) == [10, 20, 30, 40]  # every eval reached Tune
    assert curve["val_bpb"].iloc[-1] < curve["val_bpb"].iloc[0] - 0.2  # it learns
    assert (curve["param_sync_err"] == 0).all()  # both ranks hold identical parameters
    assert good.metrics["tokens"] == 40 * 8 * 64 * 2  # 2 workers x batch 8 x seq 64 per step
    assert bad.error is not None and "loss became nan" in str(bad.error)
    files = {p.name for p in (tmp_path / "trials").glob("*/*")}
    assert {"metrics.jsonl", "config.json", "env.json", "trial_config.json", "code"} <= files


def _kill_after_first_checkpoint(study_dir, process_marker: bytes, killed: list):
    deadline = time.time() + 240
    while time.time() < deadline:
        if any(study_dir.glob("**/checkpoint_*/checkpoint.pt")):
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    if process_marker in cmdline.read_bytes():
                        pid = int(cmdline.parent.name)
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        return
                except OSError:
                    continue
        time.sleep(0.2)


# A Train worker (TorchTrainer path) or, for a one-worker trial that trains in its own process, the Tune
# trial actor itself: either is restarted from the last checkpoint.
@pytest.mark.parametrize(
    "always_train,marker", [(True, b"RayTrainWorker"), (False, b"ImplicitFunc")], ids=["train_worker", "direct_trial"]
)
def test_killed_worker_restarts_from_checkpoint_and_matches_an_uninterrupted_run(
    ray_local, tmp_path, always_train, marker
):
    # 300 steps: long enough that the watcher finds the process still training after the first checkpoint
    # (60 steps of this model take about a second now that reports no longer wait for Train's 2 s poll)
    config = {**TINY, "max_steps": 300, "eval_every": 50, "lr": 3e-3}
    killed = []
    watcher = threading.Thread(target=_kill_after_first_checkpoint, args=(tmp_path, marker, killed), daemon=True)
    watcher.start()
    (result,) = run_study(tmp_path, TrialResources(num_workers=1, max_failures=2, always_train=always_train), config)
    watcher.join(timeout=1)
    assert killed, f"no {marker.decode()} process was found to kill"
    assert result.error is None
    lines = [json.loads(l) for l in next(tmp_path.glob("trials/*/metrics.jsonl")).read_text().splitlines()]
    assert [l["step"] for l in lines] == [50, 100, 150, 200, 250, 300]  # each eval once, though some were redone
    reference = train(config, log=lambda m: None)  # the same trial, never interrupted
    assert result.metrics["val_bpb"] == pytest.approx(reference["val_bpb"], abs=1e-4)


def test_latest_checkpoint_is_the_newest_complete_one(tmp_path):
    """What a trial that Tune hands no checkpoint continues from: the highest-numbered checkpoint directory that
    holds a checkpoint file (or a divergence marker); a directory a crash left empty is skipped."""
    from trainables.train import CHECKPOINT_FILE
    from trainables.tune import DIVERGED_FILE, latest_checkpoint

    assert latest_checkpoint(tmp_path / "never_ran") is None
    trial = tmp_path / "trial"
    for name, files in [
        ("checkpoint_000002", [CHECKPOINT_FILE]),
        ("checkpoint_000010", [CHECKPOINT_FILE]),
        ("checkpoint_000011", []),
        ("checkpoint_000003", [DIVERGED_FILE]),
    ]:
        (trial / name).mkdir(parents=True)
        for f in files:
            (trial / name / f).write_text("x")
    (trial / "params.json").write_text("{}")
    assert Path(latest_checkpoint(trial).path).name == "checkpoint_000010"


def test_at_most_one_trial_per_cpu_runs_at_once():
    # by hand: floor(CPUs / (workers x cpus per worker)), never more than the CPUs (--cpus-per-worker 0.001 on
    # 2 cores once planned 1,999 trials at once)
    assert TrialResources(cpus_per_worker=0.001).max_concurrent({"CPU": 2}) == 2
    assert TrialResources(cpus_per_worker=0.5).max_concurrent({"CPU": 3}) == 3
    assert TrialResources(cpus_per_worker=1).max_concurrent({"CPU": 2}) == 2
    assert TrialResources(num_workers=2, cpus_per_worker=1.5).max_concurrent({"CPU": 7}) == 2
    assert TrialResources(num_workers=2, use_gpu=True).max_concurrent({"CPU": 64, "GPU": 8}) == 4
