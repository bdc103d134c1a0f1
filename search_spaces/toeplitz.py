"""Multi-head Toeplitz mixer (seed 003, Experiment 010): 4 variants, weighted mean x projections.

Per variant: train and eval loss, runtime, samples/s, and generation speed with heads processed in
parallel vs one at a time (tokens/s, mean time, speedup).
"""
from .common import seed_suffix

AXES = {"toep_mean": [True, False], "toep_proj": [True, False]}
# The note: width 512, seq 512, 10 blocks, 4 heads, MLP 512, dropout 0.1, AdamW lr 5e-4, 500 warmup,
# batch 16, 20k steps; generation benchmark 128 tokens, 10 runs, batch 4.
PAPER = dict(mixer="toeplitz", n_embd=512, seq_len=512, n_layer=10, n_head=4, mlp_ratio=1.0, dropout=0.1, lr=5e-4,
             embedding_lr=5e-4, lm_head_lr=5e-4, warmup_steps=500, batch_size=16, max_steps=20_000, eval_every=2000,
             gen_benchmark_tokens=128, gen_benchmark_runs=10)


def base(profile) -> dict:
    keys = {**profile.train_keys(), **PAPER, "budget": None}
    if profile.name == "smoke":
        keys.update(n_embd=64, seq_len=64, n_layer=2, batch_size=8, max_steps=profile.max_steps, eval_every=profile.eval_every,
                    warmup_steps=5, lr=3e-3, embedding_lr=None, lm_head_lr=None, gen_benchmark_tokens=8, gen_benchmark_runs=1)
    elif profile.name == "cpu":
        keys.update(n_embd=128, seq_len=128, n_layer=4, batch_size=16, max_steps=profile.max_steps, eval_every=profile.eval_every,
                    warmup_steps=30, lr=3e-3, embedding_lr=None, lm_head_lr=None, gen_benchmark_tokens=32, gen_benchmark_runs=3)
    elif profile.name == "gpu":
        keys.update(max_steps=5000, eval_every=500, tokenizer=profile.tokenizer)
    return keys


def resolve(config: dict) -> dict:
    return config


def variant(config: dict) -> str:
    return f"{'mean' if config['toep_mean'] else 'nomean'}_{'proj' if config['toep_proj'] else 'noproj'}"


def trial_name(config: dict) -> str:
    return f"toeplitz_{variant(config)}" + seed_suffix(config)
