"""The Tune function trainable: each Tune trial runs one Ray Train job (TorchTrainer) whose workers
run trainables.train.train with DistributedDataParallel; a one-worker trial trains in its own process.

Ray 2.60 runs Train V2, where a TorchTrainer cannot be handed to a Tuner; the supported pattern is a
Tune function that builds a TorchTrainer and calls fit(), with TuneReportCallback forwarding the
workers' reports to Tune (so schedulers such as ASHA see every eval).

Resource arithmetic. A trial is three kinds of actor:
  the Tune function (the "trial driver")  {"CPU": 0, "train_driver": 1}   mostly waits on fit()
                                          (one-worker trials: the driver trains, and holds the worker's CPU/GPU)
  Ray Train's controller                  0 CPU                          (Train's default)
  num_workers training workers            {"CPU": cpus_per_worker} (+ {"GPU": 1} each on GPUs)
Trial drivers hold no CPU, so they can never starve the workers of another trial of CPUs; the custom
`train_driver` resource (declared on the head node: `ray start --head --resources '{"train_driver": N}'`,
or by study.run for a local cluster) caps how many trials run at once, N = floor(CPUs / (num_workers
x cpus_per_worker)) on CPU, floor(GPUs / num_workers) on GPU clusters. Without the cap, extra trial
drivers would start Train controllers that wait for workers and hold placement groups meanwhile.
"""

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import ray.train
from ray import tune
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.trainable.function_trainable import wrap_function

from trainables.storage import Mirror, is_uri, join, open_location, write_atomic
from trainables.timeline import mark, span
from trainables.train import CHECKPOINT_FILE, SEEDS_FILE, TrainingDiverged, train, train_seeds

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Train's controller polls its workers every 2 s by default, and a worker's report waits for the poll (its
# result queue holds one): an eval every second then costs 2 s of waiting, and a finished run up to 2 s more.
# Train passes the variable from the process that calls fit() to its controller and workers.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
SNAPSHOT_FILES = [
    "trainables/train.py",
    "trainables/probes.py",
    "trainables/model",
    "trainables/data",
]  # code kept with each trial


@dataclass(frozen=True)
class TrialResources:
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    max_failures: int = 2  # restarts of a trial whose worker died, from its last checkpoint
    keep_checkpoints: int = 2
    driver_resource: bool = True  # False on clusters that declare no train_driver (then cap with max_concurrent_trials)
    always_train: bool = False  # run a TorchTrainer even for one worker (see `direct`)

    @property
    def direct(self) -> bool:
        """One worker trains in the trial's own process: a TorchTrainer would add a controller actor, a worker
        actor, a placement group and a process group -- seconds a trial (benchmarks/bench_service.py)
        -- for no parallelism. Checkpoints, restore and restarts then go through Tune instead of Train."""
        return self.num_workers == 1 and not self.always_train

    def driver(self) -> dict:
        own = self.per_worker() if self.direct else {"CPU": 0}
        return {**own, "train_driver": 1} if self.driver_resource else own

    def per_worker(self) -> dict:
        return {"CPU": self.cpus_per_worker, **({"GPU": 1} if self.use_gpu else {})}

    def max_concurrent(self, cluster: dict) -> int:
        """How many trials fit the cluster at once (the train_driver count to declare)."""
        if self.use_gpu:
            return max(1, int(cluster.get("GPU", 0) // self.num_workers))
        cpus = cluster.get("CPU", 1)
        # at most one trial per CPU: --cpus-per-worker 0.001 would otherwise start thousands at once
        return max(1, min(int(cpus // (self.num_workers * self.cpus_per_worker)), int(cpus)))


def run_training(config: dict, files: Mirror | None, report_fn, checkpoint: Checkpoint | None, rank: int) -> str | None:
    """One rank's training with Ray reporting: report_fn is ray.train.report (a Train worker) or tune.report
    (a direct trial); files (rank 0 only) is where its metrics.jsonl and the rest go, pushed to the study's
    storage after every report and at the end. Returns the divergence error, if the run diverged."""

    def report(metrics: dict, checkpoint_dir: str | None):
        report_fn(metrics, checkpoint=Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)
        if checkpoint_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # report() has copied it to storage
        if files:
            files.push()

    log = (lambda msg: print(msg, flush=True)) if rank == 0 else (lambda msg: None)
    try:
        with checkpoint.as_directory() if checkpoint else nullcontext() as restore:
            if restore and (Path(restore) / DIVERGED_FILE).exists():  # a restarted run that had already diverged
                error = json.loads((Path(restore) / DIVERGED_FILE).read_text())["error"]
                report_diverged(error, report_fn, rank)
                return error
            try:
                out_dir = str(files.local) if files else None
                seeds = int(config.get("seeds") or 1)  # an Optuna search's --seeds: one trial, the mean of N runs
                if seeds > 1:
                    first = int(config.get("first_seed") or 0)  # a confirmation's seeds follow the search's
                    train_seeds(
                        config, seeds, first_seed=first, report=report, restore=restore, out_dir=out_dir, log=log
                    )
                else:
                    train(config, report=report, restore=restore, out_dir=out_dir, log=log)
            except TrainingDiverged as e:
                report_diverged(str(e), report_fn, rank)
                return str(e)
        return None
    finally:
        if files:
            files.close()  # samples.json comes after the last report


def train_worker(config: dict):
    """Runs in every Ray Train worker process."""
    import torch

    torch.set_num_threads(int(config["_threads_per_worker"]))
    register_mixers(config.get("_mixers") or {})
    rank = ray.train.get_context().get_world_rank()
    mark("worker_start", trial=config["_trial_name"], rank=rank)
    files = None
    if rank == 0:  # this worker may run on another node than the trial driver: its own copy of the trial's files
        files = trial_files(config["_study_root"], config["_trial_name"])
        files.pull()
    run_training(_trial_keys(config), files, ray.train.report, ray.train.get_checkpoint(), rank)


DIVERGED_FILE = "diverged.json"


def report_diverged(error: str, report_fn, rank: int):
    """A diverged run is a result, not a crash: a retry would diverge again. Every rank reports the error
    (with NaN metrics, which Tune requires to carry the study's metric) and rank 0 attaches a marker
    checkpoint: Train's Result.metrics only holds reports that came with a checkpoint, and a restarted run
    finds the marker and stops at once. The trial driver then fails the trial with the reason."""
    metrics = {"error": error, "diverged": True, "val_bpb": float("nan"), "val_loss": float("nan")}
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:
            write_atomic(Path(d) / DIVERGED_FILE, json.dumps({"error": error}))
            checkpoint = Checkpoint.from_directory(d)
        report_fn(metrics, checkpoint=checkpoint)


def register_mixers(mixers: dict):
    if mixers:
        from trainables.model.mixers import register_mixer

        for name, cls in mixers.items():
            register_mixer(name, cls)


def _trial_keys(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


class TrialFailed(RuntimeError):
    pass


def make_trainable(study_root: str | os.PathLike, resources: TrialResources, resolve=None, mixers: dict | None = None):
    """The Tune function trainable for a study stored at study_root (a folder every node sees, or a cloud URI),
    wrapped with its resources. resolve(config) -> the full flat trial config (derived keys, solver dims),
    applied in the trial driver. mixers: name -> class, a study file's own mixers, registered in every process
    that builds a model (trial driver and Train workers)."""
    mixers = dict(mixers or {})
    study_root = str(study_root) if is_uri(study_root) else str(Path(study_root).resolve())
    threads = max(1, int(resources.cpus_per_worker))

    def run_trial(config: dict):
        register_mixers(mixers)
        config = resolve(config) if resolve else config
        name = tune.get_context().get_trial_name()
        mark("trial_fn_start", trial=name)
        files = trial_files(study_root, name)
        files.pull()
        write_trial_files(files.local, config, resources)
        if resources.direct:
            import torch

            torch.set_num_threads(threads)
            checkpoint = tune.get_checkpoint() or latest_checkpoint(
                join(study_root, tune.get_context().get_experiment_name(), name)
            )
            error = run_training(config, files, tune.report, checkpoint, rank=0)
            if error:
                raise TrialFailed(error)
            return
        files.close()  # the workers' rank 0 makes its own copy, on whichever node it runs
        for key, value in TRAIN_ENV.items():
            os.environ.setdefault(key, value)
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={
                **config,
                "_study_root": study_root,
                "_trial_name": name,
                "_threads_per_worker": threads,
                "_mixers": mixers,
            },
            scaling_config=ScalingConfig(
                num_workers=resources.num_workers,
                use_gpu=resources.use_gpu,
                resources_per_worker=resources.per_worker(),
            ),
            torch_config=TorchConfig(backend="nccl" if resources.use_gpu else "gloo"),
            run_config=RunConfig(
                name=name,
                storage_path=join(study_root, "train"),
                callbacks=[TuneReportCallback()],
                checkpoint_config=CheckpointConfig(num_to_keep=resources.keep_checkpoints),
                failure_config=FailureConfig(max_failures=resources.max_failures),
            ),
        )
        with span("trainer_fit", trial=name):
            result = trainer.fit()  # same name + storage: Train resumes from the run's latest checkpoint
        if result.metrics and result.metrics.get("error"):
            raise TrialFailed(result.metrics["error"])

    def restore(self, checkpoint):
        # A crash between Tune deleting an old checkpoint (num_to_keep) and its next experiment-state save leaves
        # a state naming a deleted checkpoint, and Tune then fails the trial ("Could not recover from
        # checkpoint") or reruns it from step 0. Without it the function starts with none, and run_trial
        # continues from the newest complete checkpoint in the trial's storage (latest_checkpoint).
        ckpt = getattr(checkpoint, "checkpoint", checkpoint)
        if isinstance(ckpt, Checkpoint) and not _complete(ckpt.filesystem, ckpt.path):
            print(f"checkpoint {ckpt.path} is gone; continuing from the newest one in storage", flush=True)
            return None
        return base.restore(self, checkpoint)

    base = wrap_function(run_trial)  # the class Tune makes of a function (its name stays run_trial)
    return tune.with_resources(type(base.__name__, (base,), {"restore": restore}), resources.driver())


def _complete(fs, path: str) -> bool:
    """Whether a checkpoint directory holds what training writes last (a checkpoint, a divergence marker, or the
    seeds file of a several-seed trial's)."""
    import pyarrow.fs as pafs

    last = (CHECKPOINT_FILE, DIVERGED_FILE, SEEDS_FILE)
    return any(i.type == pafs.FileType.File for i in fs.get_file_info([f"{path}/{name}" for name in last]))


def trial_files(study_root: str, name: str) -> Mirror:
    """A trial's own files (config, metrics.jsonl, samples, probes, code snapshot) live in study_root/trials/NAME:
    written there in place on a filesystem; with a URI, written on this node and mirrored up."""
    if not is_uri(study_root):
        return Mirror(Path(study_root) / "trials" / name, None)
    staging = Path(tempfile.gettempdir()) / "nanostudies-trials" / hashlib.sha1(study_root.encode()).hexdigest()[:12]
    return Mirror(staging / name, join(study_root, "trials", name))


def latest_checkpoint(trial_location: str) -> Checkpoint | None:
    """The newest complete checkpoint Tune persisted in a trial's directory (a folder or a URI), for a trial
    Tune starts without one.

    After a hard crash Tune restores each unfinished trial from the checkpoint its last saved experiment state
    names. That state is written every few seconds, while a fast trial checkpoints more often and Tune deletes
    all but the newest `keep_checkpoints`: the named one can be gone, and Tune then reruns the trial from step 0
    (the case ray#27790 describes; this project's crash-and-resume test caught Ray 2.60 doing it). The
    checkpoints in storage are the trial's own progress, so a trial handed none continues from the newest.
    A trial that never checkpointed has no such directory and starts fresh."""
    import pyarrow.fs as pafs

    fs, path = open_location(trial_location)
    dirs = [
        f.path
        for f in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        if f.type == pafs.FileType.Directory and f.base_name.startswith("checkpoint_")
    ]
    complete = [d for d in dirs if _complete(fs, d)]
    return Checkpoint(max(complete, key=lambda d: d.rsplit("/", 1)[-1]), filesystem=fs) if complete else None


def tune_run_settings(resources: TrialResources) -> dict:
    """What the Tuner's RunConfig needs for these trials: a direct trial's restarts and checkpoints are Tune's."""
    if resources.direct:
        return dict(
            failure_config=tune.FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=resources.keep_checkpoints),
        )
    return dict(failure_config=tune.FailureConfig(max_failures=0))  # Train restarts workers; Tune never reruns


def write_trial_files(out_dir: Path, config: dict, resources: TrialResources):
    """config.json (as searched), env.json (versions, commit, device) and a snapshot of the code that trains."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "trial_config.json", json.dumps(_trial_keys(config), indent=2, default=str))
    write_atomic(out_dir / "env.json", json.dumps(environment(resources), indent=2))
    code = out_dir / "code"
    if not code.exists():
        for rel in SNAPSHOT_FILES:
            src = PROJECT_ROOT / rel
            if src.is_dir():
                shutil.copytree(src, code / rel, ignore=shutil.ignore_patterns("__pycache__"))
            elif src.exists():
                (code / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, code / rel)


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "ray", "optuna", "wandb", "tiktoken", "rustbpe", "numpy", "pandas", "nanostudies"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def environment(resources: TrialResources | None = None) -> dict:
    import torch

    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"cpu ({platform.processor() or platform.machine()})"
    )
    env = dict(
        python=sys.version.split()[0],
        platform=platform.platform(),
        device=device,
        cpu_count=os.cpu_count(),
        versions=package_versions(),
        git_commit=git_commit(),
        time=datetime.now(UTC).isoformat(),
    )
    if resources:
        env["resources"] = dict(
            num_workers=resources.num_workers, cpus_per_worker=resources.cpus_per_worker, use_gpu=resources.use_gpu
        )
    return env
