"""Every numeric key of GPTConfig and TrainConfig has a range, checked at construction: the edges written out by
hand here (each in-range edge builds, each value just outside, inf and nan raise a ValueError naming the field,
the value and what is allowed)."""

import math

import pytest

from trainables.model import GPTConfig
from trainables.train import TrainConfig

INF, NAN = math.inf, math.nan

# field -> (values that build, values refused, words of the allowed range)
GPT_RANGES = {
    "nanohead_proportion": ([0.0, 0.5], [-0.01, 1.0, INF, NAN, True], "[0, 1)"),
    "dropout": ([0.0, 0.99], [-0.1, 1.0, INF, NAN], "[0, 1)"),
    "mlp_ratio": ([0.01, 4, 8.0], [0, -1.0, INF, NAN], "> 0"),
    "rope_base": ([1.5, 10000.0, 500000], [1, 0.5, 0, -10.0, INF, NAN], "> 1"),
    "logit_softcap": ([None, 0, 15.0], [-1.0, INF, NAN], "None, 0 (off)"),
    "vocab_size": ([1, 50257], [0, -1, 2.0, True], ">= 1"),
    "n_layer": ([1, 48], [0, -3, 1.5], ">= 1"),
    "seq_len": ([1, 2048], [0, -1], ">= 1"),
    "nanohead_dim": ([1, 5], [0, -2], ">= 1"),
    "n_embd": ([256, 512], [0, -256], ">= 1"),  # with n_head=4: its divisibility rule is test_model_config's
    "n_head": ([1, 4], [0, -4], ">= 1"),
    "n_kv_head": ([None, 1, 4], [0, -1], ">= 1"),
}
TRAIN_RANGES = {
    "seed": ([0, 1, 2**32 - 1], [-1, 2**32, 99999999999999, 1.0, True], "[0, 2**32)"),
    "init_seed": ([0, 7, 2**32 - 1], [-1, 2**32, 1.0, True], "[0, 2**32)"),
    "data_seed": ([0, 7, 2**32 - 1], [-1, 2**32, 1.0, True], "[0, 2**32)"),
    "lr": ([1e-6, 3e-3, 1e30], [0, -1e-3, INF, NAN], "> 0"),
    "embedding_lr": ([None, 1e-3], [0, -1, INF, NAN], "> 0"),
    "lm_head_lr": ([None, 1e-3], [0.0, -1, INF], "> 0"),
    "weight_decay": ([0, 0.1, 10.0], [-3, -1e-9, INF, NAN], ">= 0"),
    "beta1": ([0, 0.9, 0.999], [5, 1, 1.0, -0.1, INF, NAN], "[0, 1)"),
    "beta2": ([0.0, 0.95], [1, -0.5, NAN], "[0, 1)"),
    "adam_eps": ([1e-10, 1e-8, 1], [0, -1e-8, INF, NAN], "> 0"),
    "muon_momentum_warmup": ([0, 300], [-1, 2.5], ">= 0"),  # 0: a constant 0.95
    "grad_clip": ([0, 1.0, 100], [-1, INF, NAN], ">= 0"),
    "max_epochs": ([0.5, 4, 2000.0], [0, -1, INF, NAN], "> 0"),
    "min_lr_frac": ([0, 0.1, 1], [-0.1, 1.1, NAN], "[0, 1]"),
    "warmdown_frac": ([0.01, 1], [0, 1.5, NAN], "(0, 1]"),
    "budget": ([None, 1e5, 50_000_000], [0, -1.0, INF, NAN], "positive"),
    "aspect_ratio": ([0.5, 64], [0, -1, INF, NAN], "> 0"),
    "max_steps": ([1, 100_000], [0, -1, 1.5], ">= 1"),
    "max_tokens": ([None, 1, 10**9], [0, -1, 1e9], ">= 1"),
    "total_batch_tokens": ([None, 512], [0, -512, 512.0], ">= 1"),
    "batch_size": ([1, 64], [0, -8, True], ">= 1"),
    "warmup_steps": ([0, 100], [-1, 2.5], ">= 0"),
    "eval_every": ([1, 50], [0], ">= 1"),
    "eval_batches": ([1, 8], [0, -1], ">= 1"),
    "head_dim": ([2, 128], [0, -64], ">= 1"),
    "sample_tokens": ([0, 48], [-1, 2.0], ">= 0"),  # 0: no samples
    "gen_benchmark_tokens": ([0, 128], [-1], ">= 0"),  # 0: no benchmark
    "gen_benchmark_runs": ([1, 10], [0, -3], ">= 1"),
    "gen_benchmark_batch": ([1, 4], [0], ">= 1"),
    "device": (
        ["auto", "cpu", "cuda", "cuda:0", "cuda:7", "mps"],
        ["gpu", "cuda:", "cuda:x", "cuda:-1", "cuda0", "tpu", ""],
        "auto, cpu, cuda, cuda:N or mps",
    ),
}


def _cases(ranges):
    return [
        (field, v, ok)
        for field, (good, bad, _) in ranges.items()
        for ok, values in ((True, good), (False, bad))
        for v in values
    ]


@pytest.mark.parametrize("field,value,ok", _cases(GPT_RANGES), ids=lambda x: repr(x))
def test_gpt_config_range(field, value, ok):
    if ok:
        assert getattr(GPTConfig(**{field: value}), field) == value or value is None  # n_kv_head=None: n_head
        return
    with pytest.raises(ValueError) as e:
        GPTConfig(**{field: value})
    assert f"GPTConfig.{field}={value!r}" in str(e.value) and GPT_RANGES[field][2] in str(e.value), str(e.value)


@pytest.mark.parametrize("field,value,ok", _cases(TRAIN_RANGES), ids=lambda x: repr(x))
def test_train_config_range(field, value, ok):
    if ok:
        assert getattr(TrainConfig(**{field: value}), field) == value
        return
    with pytest.raises(ValueError) as e:
        TrainConfig(**{field: value})
    assert f"TrainConfig.{field}={value!r}" in str(e.value) and TRAIN_RANGES[field][2] in str(e.value), str(e.value)


def test_every_numeric_field_has_a_range_here():
    """A numeric field added later without a range (and a line above) fails here."""
    from dataclasses import fields

    numeric = lambda cls: {f.name for f in fields(cls) if any(t in str(f.type) for t in ("int", "float"))}
    assert numeric(GPTConfig) == set(GPT_RANGES)
    assert numeric(TrainConfig) == set(TRAIN_RANGES) - {"device"}  # device is text, its forms listed above
