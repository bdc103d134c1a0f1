"""benchmarks/bench_paper_step.py steps the studies' real paper and gpu shapes, as the notes give them.

A step at every paper shape takes minutes on a 2-core CPU (nanohead's d7 at 2048 tokens alone ~40 s), over this
suite's budget: the benchmark runs them (README, Benchmarks). Here: that the shapes it steps are the notes'."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_paper_step import planned_models  # noqa: E402

# (layers, width, heads, vocab, sequence length) of each note's model, by hand: 004 nanoGPT's baby GPT with
# n_embd 768 and gpt2 tokens; 000 nanochat at ~50M (d7: 7 x 64 rounded up to 128-wide heads, vocab 2^15);
# 003 Experiment 010 (the vocab is the profile's bpe:65536); 002 the first candidate d29 x 192 at 65,536.
PAPER = {
    "softmax1_ab": (6, 768, 6, 50_257, 256),
    "nanohead_grid": (7, 512, 4, 32_768, 2048),
    "toeplitz_flags": (10, 512, 4, 65_536, 512),
    "vocab_depth": (29, 192, 3, 65_536, 2048),
}


@pytest.mark.parametrize("study", sorted(PAPER))
def test_the_benchmark_steps_the_notes_shapes(study):
    ((name, model),) = planned_models(study, "paper", "first")
    g = model["gpt"]
    assert (g["n_layer"], g["n_embd"], g["n_head"], g["vocab_size"], g["seq_len"]) == PAPER[study], name


def test_all_takes_each_distinct_model_once():
    models = planned_models("nanohead_grid", "paper", "all")
    # five proportions on the p=0 dims: five models, one per arm
    assert [m["gpt"]["nanohead_proportion"] for _, m in models] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert {(m["gpt"]["n_layer"], m["gpt"]["n_embd"]) for _, m in models} == {(7, 512)}
