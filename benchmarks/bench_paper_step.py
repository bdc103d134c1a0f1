"""One optimizer step at each study's `paper` and `gpu` model shape, so a shape or memory bug shows on a CPU
before it shows on a GPU.

    python benchmarks/bench_paper_step.py [--profiles paper,gpu] [--studies a,b] [--trials first|all]
                                          [--dtypes float32,bfloat16] [--steps 2] [--device cpu] [--compile]

Each study's plan is made as `study.run` makes it (plan_trials; a draw of validate_search for an Optuna study),
with max_epochs lifted: the shapes do not depend on the corpus. `--trials first` takes the plan's first trial,
`all` every distinct model of the plan. The model is the trial's real width, depth, heads, vocab and sequence
length, with one sequence per batch; each step is a forward, a backward, the clip and the trial's own optimizers
(trainables.train.build_optimizers: Muon + AdamW for nanohead's paper plan).

Every model runs in a process of its own, so a MemoryError or an out-of-memory kill is printed as that model's
reason and the next one runs, and the peak is that model's alone. Memory on a CPU is the process' resident set
(/proc/self/status): `before` once model, optimizers and batch exist, `peak` its high-water mark over the steps
(reset first through /proc/self/clear_refs), `added` = peak - before: gradients, the optimizer states made at the
first step, and the activations. On CUDA: torch.cuda.max_memory_allocated. Ratios, not timings, carry across
machines: `added / weights` (fp32 weights = 4 bytes a parameter; grads and two AdamW states alone make 3x) and
each step's FLOP/s (nanochat's estimate: 6 x non-embedding params + attention, per token) against the fastest
model measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDIES = ("softmax1_ab", "nanohead_grid", "nanohead_search", "toeplitz_flags", "vocab_depth", "scaling")


def planned_models(study: str, profile: str, which: str) -> list[tuple[str, dict]]:
    """(trial name, {gpt, train}) for the plan's first trial or each distinct model, as study.run plans them."""
    from study.catalog import get_profile, get_study
    from study.run import plan_trials, validate_search

    spec, prof = get_study(study), get_profile(profile)
    lifted = {"max_epochs": 1e12}  # a shape does not depend on the corpus' size
    if spec.searcher == "grid":
        trials = plan_trials(spec, prof, lifted, 1, 1)
    else:
        trials = [dict(d, name=f"draw {i}") for i, d in enumerate(validate_search(spec, prof, lifted))]
    out, seen = [], set()
    for t in trials[:1] if which == "first" else trials:
        key = json.dumps(t["gpt"].to_dict(), sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append((t["name"], dict(gpt=t["gpt"].to_dict(), train=asdict(t["train"]))))
    return out


# ----------------------------------------------------------------------------- one model, in a process of its own


def _status(key: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set (Linux >= 4.0)
        return True
    except OSError:
        return False


def one_model(job: dict) -> dict:
    import torch

    from trainables.model import GPTConfig, build_model, count_params, flops_per_token
    from trainables.train import TrainConfig, build_optimizers

    g, tc = GPTConfig(**job["gpt"]), TrainConfig(**job["train"])
    device = torch.device(job["device"])
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(g).to(device)
    optimizers = build_optimizers(model, tc)
    step_model = torch.compile(model) if job["compile"] else model
    x = torch.randint(0, g.vocab_size, (1, g.seq_len), device=device)
    y = torch.randint(0, g.vocab_size, (1, g.seq_len), device=device)
    dtype = {"float32": None, "bfloat16": torch.bfloat16}[job["dtype"]]
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before, exact = _status("VmRSS"), _reset_peak()
    times = []
    for _ in range(job["steps"]):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip if tc.grad_clip > 0 else float("inf"))
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - t0)
    if cuda:
        peak, how = torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    else:
        peak, how = _status("VmHWM"), "VmHWM" if exact else "VmHWM (not reset: includes the model's build)"
    p = count_params(g)
    return dict(
        params=p["total"],
        layers=g.n_layer,
        width=g.n_embd,
        heads=g.n_head,
        vocab=g.vocab_size,
        seq=g.seq_len,
        arch=g.arch,
        mixer=g.mixer,
        optimizer=tc.optimizer,
        loss=float(loss),
        times=times,
        before=before,
        peak=peak,
        memory=how,
        flops=flops_per_token(g) * g.seq_len,
    )


# ----------------------------------------------------------------------------- the table


def run_one(job: dict, timeout: float) -> dict:
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--job", json.dumps(job)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
    except subprocess.TimeoutExpired:
        return dict(error=f"over --timeout {timeout:g}s")
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else ""
        if proc.returncode < 0:  # a signal: SIGKILL is what the kernel's out-of-memory killer sends
            reason = f"killed by signal {-proc.returncode}" + (" (out of memory?)" if proc.returncode == -9 else "")
        return dict(error=reason[:300] or f"exit {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default="paper,gpu")
    ap.add_argument("--studies", default=",".join(STUDIES))
    ap.add_argument("--trials", choices=("first", "all"), default="first")
    ap.add_argument("--dtypes", default="float32", help="float32 and/or bfloat16 (autocast)")
    ap.add_argument(
        "--steps", type=int, default=2, help="optimizer steps per model (the first makes the optimizer states)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (minutes a model on a CPU)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per model")
    ap.add_argument("--json", default=None, help="also write every result to this file")
    ap.add_argument("--job", default=None, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args(argv)
    if args.job:
        print(json.dumps(one_model(json.loads(args.job))))
        return 0
    import torch

    print(
        f"one step per model, one sequence per batch, on {args.device} ({torch.get_num_threads()} threads), "
        f"{args.steps} steps, {'compiled' if args.compile else 'eager'}; torch {torch.__version__}"
    )
    header = (
        f"{'study':16} {'profile':7} {'trial':28} {'dtype':8} {'params':>12} {'L':>3} {'width':>5} {'heads':>5} "
        f"{'vocab':>6} {'seq':>5} {'step 1 s':>9} {'step 2 s':>9} {'GFLOP/s':>8} {'before MB':>9} "
        f"{'peak MB':>8} {'added MB':>8} {'added/w':>7}"
    )
    print(header + "\n" + "-" * len(header))
    results = []
    for study in args.studies.split(","):
        for profile in args.profiles.split(","):
            try:
                models = planned_models(study, profile, args.trials)
            except Exception as e:  # a plan that does not build is a finding too
                print(f"{study:16} {profile:7} plan failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                continue
            for name, model in models:
                for dtype in args.dtypes.split(","):
                    job = dict(model, device=args.device, dtype=dtype, steps=args.steps, compile=args.compile)
                    r = dict(study=study, profile=profile, trial=name, dtype=dtype, **run_one(job, args.timeout))
                    results.append(r)
                    g = model["gpt"]
                    if "error" in r:
                        print(
                            f"{study:16} {profile:7} {name[:28]:28} {dtype:8} {'':>12} {g['n_layer']:>3} {g['n_embd']:>5} "
                            f"{g['n_head']:>5} {g['vocab_size']:>6} {g['seq_len']:>5} failed: {r['error']}",
                            flush=True,
                        )
                        continue
                    MB, t = 2**20, r["times"]
                    r["gflops"] = r["flops"] / min(t) / 1e9
                    print(
                        f"{study:16} {profile:7} {name[:28]:28} {dtype:8} {r['params']:>12,} {r['layers']:>3} "
                        f"{r['width']:>5} {r['heads']:>5} {r['vocab']:>6} {r['seq']:>5} {t[0]:>9.2f} "
                        f"{t[-1] if len(t) > 1 else float('nan'):>9.2f} {r['gflops']:>8.1f} {r['before'] / MB:>9,.0f} "
                        f"{r['peak'] / MB:>8,.0f} {(r['peak'] - r['before']) / MB:>8,.0f} "
                        f"{(r['peak'] - r['before']) / (4 * r['params']):>7.2f}",
                        flush=True,
                    )
    done = [r for r in results if "error" not in r]
    if done:
        best = max(done, key=lambda r: r["gflops"])
        print(
            f"\nGFLOP/s against the fastest model here ({best['trial']} {best['profile']}, {best['gflops']:.1f}): "
            + ", ".join(f"{r['trial']} {r['profile']} {r['dtype']} {r['gflops'] / best['gflops']:.2f}x" for r in done)
        )
        print(f"memory: {done[0]['memory']}; added/w = (peak - before) / (4 bytes x params)")
    failed = [r for r in results if "error" in r]
    if failed:
        print(
            f"{len(failed)} model(s) failed: "
            + "; ".join(f"{r['study']} {r['profile']} {r['dtype']}: {r['error']}" for r in failed)
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
