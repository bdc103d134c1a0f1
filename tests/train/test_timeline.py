"""The phase marks that benchmarks/bench_service.py reads: one JSON line per mark, only when asked for."""

import json
import multiprocessing

from trainables.timeline import TIMELINE_ENV, mark, span
from trainables.train import train

TINY = dict(n_layer=1, n_embd=32, n_head=2, seq_len=32, batch_size=2, eval_batches=1, tokenizer="bpe:512")


def _marks(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_no_file_no_marks(tmp_path, monkeypatch):
    monkeypatch.delenv(TIMELINE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    mark("anything", trial="x")
    assert list(tmp_path.iterdir()) == []


def _mark_many(path: str, who: int):
    import os

    os.environ[TIMELINE_ENV] = path
    for i in range(200):
        mark("tick", who=who, i=i, pad="x" * 200)


def test_processes_appending_at_once_never_tear_a_line(tmp_path):
    path = tmp_path / "timeline.jsonl"
    procs = [multiprocessing.get_context("spawn").Process(target=_mark_many, args=(str(path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = _marks(path)  # every line parses
    assert sorted((m["who"], m["i"]) for m in lines) == [(w, i) for w in range(3) for i in range(200)]


def test_a_training_run_marks_its_phases_in_order(tmp_path, monkeypatch, token_cache):
    path = tmp_path / "timeline.jsonl"
    monkeypatch.setenv(TIMELINE_ENV, str(path))
    with span("outer", trial="t"):
        train(
            {**TINY, "max_steps": 4, "eval_every": 2}, report=lambda metrics, checkpoint_dir: None, log=lambda m: None
        )
    events = [m["event"] for m in _marks(path)]
    assert events[0] == "outer_start" and events[-1] == "outer_end"
    assert events[1:3] == ["train_start", "first_step"]
    assert events.count("report_start") == events.count("report_end") == 2  # an eval every 2 of 4 steps
    assert events.count("checkpoint_start") == 2
    assert events[-2] == "train_end"
    times = [m["t"] for m in _marks(path)]
    assert times == sorted(times)
