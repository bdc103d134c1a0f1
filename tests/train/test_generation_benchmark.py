"""The generation benchmark (the Toeplitz note's): heads parallel vs sequential, cached vs uncached, in the
training's dtype. Timings are only checked for their arithmetic (tokens/s = batch x tokens / mean time, the
speedups are ratios of those), never for their size."""

import pytest
import torch

from trainables.data import prepare_tokens
from trainables.model import GPT, GPTConfig
from trainables.train import TrainConfig, generation_benchmark

KEYS = {
    f"gen_{what}_{cached}{path}"
    for what in ("tokens_per_s", "mean_time")
    for cached in ("", "uncached_")
    for path in ("parallel", "sequential")
}
KEYS |= {"gen_speedup", "gen_speedup_uncached", "gen_cache_speedup_parallel", "gen_cache_speedup_sequential"}


def _model(vocab_size: int) -> GPT:
    torch.manual_seed(0)
    return GPT(
        GPTConfig(
            vocab_size=vocab_size,
            n_layer=2,
            n_embd=32,
            n_head=4,
            seq_len=64,
            mixer="toeplitz",
            toep_mean=True,
            toep_proj=True,
        )
    )


def test_benchmark_reports_cached_and_uncached(token_cache):
    data = prepare_tokens("wiki", "bpe:512")
    model = _model(data.vocab_size)
    tc = TrainConfig(gen_benchmark_tokens=6, gen_benchmark_runs=2, gen_benchmark_batch=3, dtype="float32", device="cpu")
    out = generation_benchmark(model, data, tc, torch.device("cpu"))
    assert set(out) == KEYS
    for cached in ("", "uncached_"):
        for path in ("parallel", "sequential"):
            assert out[f"gen_mean_time_{cached}{path}"] > 0
            assert out[f"gen_tokens_per_s_{cached}{path}"] == pytest.approx(
                3 * 6 / out[f"gen_mean_time_{cached}{path}"], rel=1e-12
            )
    assert out["gen_speedup"] == pytest.approx(
        out["gen_tokens_per_s_parallel"] / out["gen_tokens_per_s_sequential"], rel=1e-12
    )
    assert out["gen_speedup_uncached"] == pytest.approx(
        out["gen_tokens_per_s_uncached_parallel"] / out["gen_tokens_per_s_uncached_sequential"], rel=1e-12
    )
    for path in ("parallel", "sequential"):
        assert out[f"gen_cache_speedup_{path}"] == pytest.approx(
            out[f"gen_tokens_per_s_{path}"] / out[f"gen_tokens_per_s_uncached_{path}"], rel=1e-12
        )
    assert model.training, "the model goes back to training mode"


@pytest.mark.parametrize("dtype,want", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_benchmark_runs_in_the_training_dtype(token_cache, dtype, want):
    """What the lm_head computes in during the benchmark: bf16 when training used bf16 autocast, else fp32."""
    data = prepare_tokens("wiki", "bpe:512")
    model = _model(data.vocab_size)
    seen = set()
    model.lm_head.register_forward_hook(lambda module, args, output: seen.add(output.dtype))
    tc = TrainConfig(gen_benchmark_tokens=3, gen_benchmark_runs=1, gen_benchmark_batch=2, dtype=dtype, device="cpu")
    generation_benchmark(model, data, tc, torch.device("cpu"))
    assert seen == {want}
