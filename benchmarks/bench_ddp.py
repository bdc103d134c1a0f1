"""DDP scaling: training tokens/s of the same trial with 1 and 2 Ray Train workers (gloo on CPU, nccl on GPU),
measured in one run, one Ray cluster.

    python benchmarks/bench_ddp.py [--steps N]

Each worker gets 1 CPU and 1 thread, so 2 workers use twice the compute; the ratio shows what DDP's
all-reduce leaves of it. For reference, one worker with 2 threads (the same compute in one process).
tokens/s is the training throughput of the last eval window (after warm-up), as train.py reports it.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIG = dict(
    n_layer=4,
    n_embd=256,
    n_head=4,
    seq_len=256,
    batch_size=8,
    eval_every=20,
    eval_batches=2,
    tokenizer="bpe:4096",
    lr=3e-3,
    warmup_steps=5,
    checkpoint=False,
)


def run(num_workers: int, cpus: float, steps: int, study_dir: Path) -> float:
    from ray import tune

    from trainables.tune import TrialResources, make_trainable, tune_run_settings

    resources = TrialResources(num_workers=num_workers, cpus_per_worker=cpus, always_train=True)
    tuner = tune.Tuner(
        make_trainable(study_dir, resources),
        param_space={**CONFIG, "max_steps": steps},
        tune_config=tune.TuneConfig(metric="val_bpb", mode="min"),
        run_config=tune.RunConfig(
            storage_path=str(study_dir), name=f"w{num_workers}c{cpus}", verbose=0, **tune_run_settings(resources)
        ),
    )
    (result,) = tuner.fit()
    if result.error:
        sys.exit(f"trial failed: {result.error}")
    return result.metrics["tokens_per_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    import ray

    os.environ.setdefault("NANOSTUDIES_CACHE", str(Path(tempfile.gettempdir()) / "nanostudies_bench_cache"))
    from trainables.data import prepare_tokens

    prepare_tokens("wiki", CONFIG["tokenizer"])
    ray.init(
        num_cpus=2,
        resources={"train_driver": 1},
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
        runtime_env={"env_vars": {"NANOSTUDIES_CACHE": os.environ["NANOSTUDIES_CACHE"]}},
    )
    with tempfile.TemporaryDirectory() as d:
        rows = [
            ("1 worker x 1 CPU", run(1, 1, args.steps, Path(d))),
            ("2 workers x 1 CPU (DDP, gloo)", run(2, 1, args.steps, Path(d))),
            ("1 worker x 2 CPUs (2 threads)", run(1, 2, args.steps, Path(d))),
        ]
    ray.shutdown()
    base = rows[0][1]
    print(
        f"\nsame trial (4 layers x 256, seq 256, batch 8 per worker), {args.steps} steps; tokens/s of the last window"
    )
    print(f"{'setup':34} {'tokens/s':>10} {'vs 1 worker':>12}")
    for name, tok_s in rows:
        print(f"{name:34} {tok_s:10,.0f} {tok_s / base:11.2f}x")


if __name__ == "__main__":
    main()
