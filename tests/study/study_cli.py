"""Helpers for the study tests: run `python -m study.run` as a real subprocess, read its dry-run table,
and build reference models by hand (torch numel, not the code's own count)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The profiles' budgets, written out here rather than read from study.profiles (the reference).
SMOKE = dict(max_steps=30, batch_size=8, seq_len=64, eval_every=10, depth=2)
CPU = dict(max_steps=300, batch_size=16, seq_len=128)
STUDY_NAMES = ["nanohead_grid", "nanohead_search", "softmax1_ab", "toeplitz_flags", "vocab_depth", "scaling"]


def cli_env(cache: str, extra: dict | None = None) -> dict:
    env = {**os.environ, "NANOSTUDIES_CACHE": cache, "PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true", **(extra or {})}
    env.pop("RAY_ADDRESS", None)  # always a fresh local cluster, never someone else's
    return env


def run_cli(
    cache: str, *args, timeout: float = 120, env: dict | None = None, module: str = "study.run"
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=ROOT,
        env=cli_env(cache, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(cache: str, *args, log: Path, env: dict | None = None) -> subprocess.Popen:
    """A study.run in its own session (so a 'machine crash' can kill it and every process it started)."""
    out = open(log, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "study.run", *map(str, args)],
        cwd=ROOT,
        env=cli_env(cache, env),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of a session: the driver and every Ray process it started."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def crash(proc: subprocess.Popen, timeout: float = 30):
    """What a reboot does to a study: SIGKILL to the driver and to every process of its session (Ray's
    GCS, raylet, dashboard, workers: workers sit in process groups of their own, so killpg is not enough)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = session_pids(proc.pid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    proc.wait(timeout=timeout)
    assert not session_pids(proc.pid), "processes of the killed study survived"


def parse_table(stdout: str) -> list[dict]:
    """The dry-run table -> one dict per row; numbers with thousands separators become ints/floats."""
    lines = stdout.splitlines()
    start = next(i for i, l in enumerate(lines) if l.split()[:1] == ["trial"])
    header = lines[start].split()
    assert set(lines[start + 1]) == {"-"}, lines[start + 1]
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        values = line.split()
        assert len(values) == len(header), line
        rows.append({k: _number(v) for k, v in zip(header, values)})
    return rows


def _number(text: str):
    for cast in (int, float):
        try:
            return cast(text.replace(",", ""))
        except ValueError:
            pass
    return text


def numel(**config) -> dict:
    """Parameters of a real model (GPT, or NanoGPT for arch="nanogpt"), counted from its modules (the reference for
    count_params and the table)."""
    from trainables.model import GPTConfig, build_model

    model = build_model(GPTConfig(**config))
    total = sum(p.numel() for p in model.parameters())
    return dict(total=total)


def hand_params(vocab: int, width: int, layers: int, tied: bool = False, kv_width: int | None = None) -> dict:
    """nanochat's count by hand for an attention GPT: q, k, v, proj and a 4x MLP, no biases, no norms' weights."""
    kv_width = width if kv_width is None else kv_width
    block = 2 * width * width + 2 * width * kv_width + 2 * width * 4 * width
    embedding = vocab * width
    lm_head = 0 if tied else vocab * width
    return dict(embedding=embedding, lm_head=lm_head, blocks=layers * block, total=embedding + lm_head + layers * block)


def experiment_trials(exp_dir: Path) -> dict:
    """Tune's persisted experiment state (what a --resume restores): name -> (status, last checkpoint dir)."""
    states = sorted(exp_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        state = json.loads(states[-1].read_text())
    except (json.JSONDecodeError, OSError):  # caught mid-write
        return {}
    out = {}
    for meta, run in state.get("trial_data", []):
        meta, run = json.loads(meta), json.loads(run)
        out[meta.get("custom_trial_name")] = (
            meta.get("status"),
            (run.get("last_result") or {}).get("checkpoint_dir_name"),
        )
    return out


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
