"""Service overhead: a smoke study of 4 tiny trials through Ray Tune (+ Ray Train) vs the same 4 trainings
in a plain loop in one process, measured in the same run.

    python benchmarks/bench_service.py [--profile smoke] [--max-steps N]

Prints wall time of each and the ratio to the plain loop. The study runs through the real CLI
(`python -m study.run nanohead_grid ...`), Ray start-up and data preparation included, because that
is what a user waits for; the plain loop also prepares its data (cache warm for both).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROPORTIONS = "0,0.2,0.4,0.6"


def plain_loop(profile: str, max_steps: int) -> float:
    from search_spaces import nanohead
    from study.profiles import PROFILES
    from trainables.train import train

    t0 = time.time()
    for p in [float(x) for x in PROPORTIONS.split(",")]:
        config = nanohead.resolve({**nanohead.base(PROFILES[profile]), "nanohead_proportion": p, "seed": 0,
                                   "max_steps": max_steps})
        train(config, log=lambda m: None)
    return time.time() - t0


def study_run(profile: str, max_steps: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "study.run", "nanohead_grid", "--profile", profile, "--output", out,
               "--wandb", "disabled", "--no-report", "--set", f"nanohead_proportion={PROPORTIONS}",
               "--set", f"max_steps={max_steps}", *extra]
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.time() - t0
        if proc.returncode != 0:
            sys.exit(f"study.run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--max-steps", type=int, default=30)
    args = ap.parse_args()
    os.environ.setdefault("NANOSTUDIES_CACHE", str(Path(tempfile.gettempdir()) / "nanostudies_bench_cache"))
    plain_loop(args.profile, 2)  # warm the token cache and the imports, so neither side pays for them
    rows = [("plain loop, one process", plain_loop(args.profile, args.max_steps))]
    rows.append(("study.run (Tune; 1 worker trains in the trial)", study_run(args.profile, args.max_steps, [])))
    rows.append(("study.run --ray-train (Tune + Train per trial)", study_run(args.profile, args.max_steps, ["--ray-train"])))
    base = rows[0][1]
    print(f"\n4 trials of nanohead_grid, profile {args.profile}, {args.max_steps} steps each, {os.cpu_count()} CPUs")
    print(f"{'mode':50} {'wall s':>8} {'vs plain':>9}")
    for name, wall in rows:
        print(f"{name:50} {wall:8.1f} {wall / base:8.2f}x")


if __name__ == "__main__":
    main()
