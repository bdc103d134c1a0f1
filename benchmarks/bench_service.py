"""Service overhead: a smoke study of 4 tiny trials through Ray Tune (+ Ray Train) vs the same 4 trainings
in a plain loop in one process, measured in the same run, and where the difference goes.

    python benchmarks/bench_service.py [--profile smoke] [--max-steps N] [--modes plain,direct,ray-train,ddp]

Prints wall time of each mode and its ratio to the plain loop, then a breakdown by phase for each mode:
start-up (Python and imports, checks, data, Ray start), per trial (actor start, Train worker start, to the
first step, training, reports and checkpoints, teardown) and the end (results). The study runs through the
real CLI (`python -m study.run nanohead_grid ...`), because that is what a user waits for; every process of
it marks its phases into a timeline file (trainables/timeline.py). The `ddp` mode is one trial with two
Ray Train workers (DDP over gloo); its fixed cost is the trial's wall time minus its training.
Ray start with and without the dashboard is timed in this process.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainables.timeline import TIMELINE_ENV  # noqa: E402

PROPORTIONS = "0,0.2,0.4,0.6"
MODES = {
    "plain": "plain loop, one process",
    "direct": "study.run (Tune; 1 worker trains in the trial)",
    "ray-train": "study.run --ray-train (Tune + Train per trial)",
    "ddp": "study.run --workers-per-trial 2 (1 DDP trial)",
}


def plain_loop(profile: str, max_steps: int, timeline: Path | None = None) -> float:
    from search_spaces import nanohead
    from study.profiles import PROFILES
    from trainables.train import train

    if timeline:
        os.environ[TIMELINE_ENV] = str(timeline)
    t0 = time.time()
    for p in [float(x) for x in PROPORTIONS.split(",")]:
        config = nanohead.resolve(
            {**nanohead.base(PROFILES[profile]), "nanohead_proportion": p, "seed": 0, "max_steps": max_steps}
        )
        train(config, log=lambda m: None)
    os.environ.pop(TIMELINE_ENV, None)
    return time.time() - t0


def study_run(profile: str, max_steps: int, extra: list[str], timeline: Path, proportions=PROPORTIONS) -> dict:
    """Runs the CLI; returns its wall time, when its first line came, and its timeline's events."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-m",
            "study.run",
            "nanohead_grid",
            "--profile",
            profile,
            "--output",
            out,
            "--wandb",
            "disabled",
            "--no-report",
            "--set",
            f"nanohead_proportion={proportions}",
            "--set",
            f"max_steps={max_steps}",
            *extra,
        ]
        env = {**os.environ, TIMELINE_ENV: str(timeline)}
        t0 = time.time()
        errors = Path(out) / "stderr.txt"  # a file, not a pipe: a full stderr pipe would block the study
        with open(errors, "w") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
            first_line = None
            lines = []
            for line in proc.stdout:
                first_line = first_line or time.time() - t0
                lines.append(line)
            proc.wait()
        stderr = errors.read_text()
        wall = time.time() - t0
        if proc.returncode != 0:
            sys.exit(f"study.run failed ({proc.returncode}):\n{''.join(lines)[-2000:]}\n{stderr[-2000:]}")
    events = [json.loads(l) for l in timeline.read_text().splitlines()]
    return dict(t0=t0, wall=wall, first_line=first_line, events=events)


def phases(run: dict) -> tuple[list[tuple[str, float]], dict]:
    """The run's timeline as (phase, seconds) rows: study-wide phases once, per-trial phases as means over
    trials; and per-trial sums (wall, training) for the fixed-cost line."""
    t0, ev = run["t0"], run["events"]
    first = {}
    for e in ev:
        first.setdefault(e["event"], e["t"])
    last = {e["event"]: e["t"] for e in ev}

    # Events from training processes carry no trial name: they belong to the trial their process last started.
    owner, per_trial = {}, defaultdict(lambda: defaultdict(list))
    for e in sorted(ev, key=lambda e: e["t"]):
        if e["event"] in ("trial_fn_start", "worker_start"):
            owner[e["pid"]] = (e["trial"], e.get("rank", 0))
        trial, rank = (
            (e["trial"], 0) if "trial" in e and e["event"] != "worker_start" else owner.get(e["pid"], (None, 0))
        )
        if trial and rank == 0:  # rank 0's view: the other ranks train in step with it
            per_trial[trial][e["event"]].append(e["t"])

    def span(d, name):
        return sum(b - a for a, b in zip(d.get(f"{name}_start", []), d.get(f"{name}_end", [])))

    trial_rows = defaultdict(list)
    sums = dict(wall=0.0, training=0.0, trials=0)
    for _trial, d in per_trial.items():
        if "trial_start" not in d or "trial_end" not in d or "train_start" not in d:
            continue
        start, end = d["trial_start"][0], d["trial_end"][-1]
        fn = d["trial_fn_start"][0]
        worker = d.get("worker_start", [fn])[0]
        reports, checkpoints = span(d, "report"), span(d, "checkpoint")
        loop = d["train_end"][-1] - d["train_start"][0]
        training = loop - reports - checkpoints
        row = [("trial actor start (scheduled -> trial function runs)", fn - start)]
        if "trainer_fit_start" in d:
            row.append(("Train: controller, placement group, worker processes", worker - d["trainer_fit_start"][0]))
        row += [
            (
                "to the training loop (files, config, imports)",
                d["train_start"][0] - (worker if "trainer_fit_start" in d else fn),
            ),
            ("data + model build + first step", d["first_step"][0] - d["train_start"][0]),
            ("training (steps and evals)", training - (d["first_step"][0] - d["train_start"][0])),
            (f"reports ({len(d.get('report_start', []))})", reports),
            (f"  of which checkpoints saved ({len(d.get('checkpoint_start', []))})", checkpoints),
            ("teardown (last step -> trial ends)", end - d["train_end"][-1]),
        ]
        for name, value in row:
            trial_rows[name].append(value)
        sums["wall"] += end - start
        sums["training"] += training
        sums["trials"] += 1

    rows = [
        ("Python start + imports", first["cli_start"] - t0),
        ("checks and plan", first["prepare_data_start"] - first["cli_start"]),
        ("data preparation (cache warm)", last["prepare_data_end"] - first["prepare_data_start"]),
        ("import Ray and the service", last["import_service_end"] - first["import_service_start"]),
        ("Ray start (ray.init)", last["ray_init_end"] - first["ray_init_start"]),
        ("Tuner set-up", first["fit_start"] - last["ray_init_end"]),
        ("first trial scheduled", first["trial_start"] - first["fit_start"]),
        ("command -> first trial starts", first["trial_start"] - t0),
        ("command -> first progress line", run["first_line"]),
    ]
    rows += [(f"per trial: {name}", statistics.mean(values)) for name, values in trial_rows.items()]
    rows += [
        ("last trial ends -> Tuner returns", last["fit_end"] - last["trial_end"]),
        ("results (trials.parquet)", last["results_end"] - last["fit_end"]),
        ("exit (Ray shutdown, files)", run["wall"] - (last["results_end"] - t0)),
    ]
    return rows, sums


TRAIN_LOG_PHASES = [  # what Ray Train's controller logs about starting a worker group (its sys log, JSON lines)
    ("Train: placement group ready", r"Placement group ready in ([\d.]+)s"),
    ("Train: worker processes started (process, Ray, imports)", r"worker actors created in ([\d.]+)s"),
    ("Train: train context on workers (torch, process group)", r"Train context initialized on workers in ([\d.]+)s"),
    ("Train: train function launched (unpickled, our imports)", r"Train function launched on workers in ([\d.]+)s"),
]


def train_controller_phases(fit_starts: list[float]) -> list[tuple[str, float]]:
    """Means over the run's Train controllers (one per trial) of the worker-group phases they log, and the time
    from fit() to the controller's first line (its actor's process start and imports). Reads the logs of the
    Ray session the study just ran (Ray's default temp dir)."""
    import glob
    import re
    from datetime import datetime

    logs = sorted(
        glob.glob(
            os.path.join(
                tempfile.gettempdir(), "ray", "session_latest", "logs", "train", "ray-train-sys-controller-*.log"
            )
        )
    )
    found, firsts = defaultdict(list), []
    for log in logs:
        lines = []
        for line in Path(log).read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        if lines and "asctime" in lines[0]:
            firsts.append(datetime.strptime(lines[0]["asctime"], "%Y-%m-%d %H:%M:%S,%f").timestamp())
        for name, pattern in TRAIN_LOG_PHASES:
            for record in lines:
                m = re.search(pattern, record.get("message", ""))
                if m:
                    found[name].append(float(m.group(1)))
    rows = []
    if firsts and len(firsts) == len(fit_starts):
        rows.append(
            (
                "Train: controller actor start (fit() -> its first line)",
                statistics.mean(f - s for f, s in zip(sorted(firsts), sorted(fit_starts))),
            )
        )
    rows += [(name, statistics.mean(found[name])) for name, _ in TRAIN_LOG_PHASES if found[name]]
    return [(f"per trial: {name}", value) for name, value in rows]


def plain_phases(timeline: Path, wall: float) -> tuple[list[tuple[str, float]], dict]:
    ev = [json.loads(l) for l in timeline.read_text().splitlines()]
    starts = [e["t"] for e in ev if e["event"] == "train_start"]
    firsts = [e["t"] for e in ev if e["event"] == "first_step"]
    ends = [e["t"] for e in ev if e["event"] == "train_end"]
    training = sum(e - f for f, e in zip(firsts, ends))
    rows = [
        ("per trial: data + model build + first step", statistics.mean(f - s for s, f in zip(starts, firsts))),
        ("per trial: training (steps and evals)", training / len(ends)),
    ]
    return rows, dict(wall=wall, training=sum(e - s for s, e in zip(starts, ends)), trials=len(ends))


def ray_start_times() -> list[tuple[str, float]]:
    """ray.init + ray.shutdown of a local Ray, with and without the dashboard, as study.run starts it."""
    import ray

    out = []
    for dashboard in (True, False):
        t = time.time()
        ray.init(
            address="local",
            num_cpus=os.cpu_count(),
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
            logging_level="ERROR",
        )
        started = time.time() - t
        ray.shutdown()
        out.append((f"ray.init {'with' if dashboard else 'without'} the dashboard", started))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--max-steps", type=int, default=30)
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    args = ap.parse_args()
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown or "plain" not in modes:
        ap.error(f"--modes {args.modes}: must include plain (the baseline) and name only {', '.join(MODES)}")
    os.environ.setdefault("NANOSTUDIES_CACHE", str(Path(tempfile.gettempdir()) / "nanostudies_bench_cache"))
    plain_loop(args.profile, 2)  # warm the token cache and the imports, so neither side pays for them
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            timeline = Path(tmp) / f"{mode}.jsonl"
            if mode == "plain":
                wall = plain_loop(args.profile, args.max_steps, timeline)
                results[mode] = (wall, *plain_phases(timeline, wall))
                continue
            extra = {"direct": [], "ray-train": ["--ray-train"], "ddp": ["--workers-per-trial", "2"]}[mode]
            run = study_run(
                args.profile, args.max_steps, extra, timeline, proportions="0" if mode == "ddp" else PROPORTIONS
            )
            rows, sums = phases(run)
            if mode in ("ray-train", "ddp"):
                train_rows = train_controller_phases(
                    [e["t"] for e in run["events"] if e["event"] == "trainer_fit_start"]
                )
                total = dict(rows).get("per trial: Train: controller, placement group, worker processes")
                if train_rows and total is not None:
                    train_rows.append(
                        (
                            "per trial: Train: the rest (placement-group cleaner and sync actors, callbacks)",
                            total - sum(v for _, v in train_rows),
                        )
                    )
                rows += train_rows
            results[mode] = (run["wall"], rows, sums)
    ray_rows = ray_start_times()

    base = results["plain"][0]
    print(
        f"\n{len(PROPORTIONS.split(','))} trials of nanohead_grid (ddp: 1 trial), profile {args.profile}, "
        f"{args.max_steps} steps each, {os.cpu_count()} CPUs"
    )
    print(f"{'mode':50} {'wall s':>8} {'vs plain':>9} {'trial fixed s':>14}")
    for mode, (wall, _, sums) in results.items():
        fixed = (sums["wall"] - sums["training"]) / sums["trials"] if mode != "plain" and sums["trials"] else 0.0
        print(f"{MODES[mode]:50} {wall:8.1f} {wall / base:8.2f}x {fixed:14.1f}")
    print("  trial fixed s: a trial's wall time (start to end, as Tune sees it) minus its training, per trial")
    if "direct" in results and "ray-train" in results:
        print(f"  --ray-train vs direct: {results['ray-train'][0] / results['direct'][0]:.2f}x")

    names = list(dict.fromkeys(name for _, rows, _ in results.values() for name, _ in rows))
    print(f"\n{'phase (seconds)':80}" + "".join(f"{m:>11}" for m in results))
    for name in names:
        cells = []
        for _, rows, _ in results.values():
            value = dict(rows).get(name)
            cells.append(f"{value:11.2f}" if value is not None else f"{'':>11}")
        print(f"{name:80}" + "".join(cells))
    print()
    for name, seconds in ray_rows:
        print(f"{name:80}{seconds:11.2f}")


if __name__ == "__main__":
    main()
