"""toeplitz_flags against note 003: its default arms are the note's mixer (only mean x projections vary), its
paper profile trains with the note's HF Trainer settings, each new key set alone takes effect or exits 2, and
all_results.json carries the best eval beside the final one and the cached vs uncached benchmark."""

import json

import pytest

from study.catalog import get_profile, get_study
from study.run import plan_trials

SMOKE = ["--profile", "smoke"]


def _plan(profile: str, overrides: dict | None = None) -> list[dict]:
    # max_epochs: the gpu and paper plans loop the small default corpus (refused otherwise); here only the configs count
    return plan_trials(
        get_study("toeplitz_flags"), get_profile(profile), {"max_epochs": 1e6, **(overrides or {})}, 1, 1
    )


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu", "paper"])
def test_default_arms_are_the_notes_mixer(profile):
    """The note's code builds every arm with linear filters w = raw, raw ~ N(0, 0.2^2), and nn.Linear projections
    with biases; do_toep_mean only divides and do_toep_proj only adds the projections."""
    trials = _plan(profile)
    assert sorted(t["name"] for t in trials) == [
        "toeplitz_mean_noproj",
        "toeplitz_mean_proj",
        "toeplitz_nomean_noproj",
        "toeplitz_nomean_proj",
    ]
    for t in trials:
        g = t["gpt"]
        assert (g.mixer, g.toep_filter, g.toep_init, g.toep_proj_bias) == ("toeplitz", "linear", "normal", True)
        assert t["name"] == f"toeplitz_{'mean' if g.toep_mean else 'nomean'}_{'proj' if g.toep_proj else 'noproj'}"


def test_paper_profile_is_the_notes_model_and_trainer():
    """The note: width 512, seq 512, 10 blocks, 4 heads, MLP 512, dropout 0.1; HF Trainer with lr 5e-4, batch 16,
    500 warmup steps, 20,000 steps, AdamW (torch) at its defaults betas (0.9, 0.999), no weight decay, clip 1.0, and
    the default linear schedule: lr(s) = (20000 - s) / (20000 - 500) after warmup, 0 at the end."""
    from trainables.train import lr_multiplier

    for t in _plan("paper"):
        g, tc = t["gpt"], t["train"]
        assert (g.n_embd, g.seq_len, g.n_layer, g.n_head, g.mlp_hidden, g.dropout) == (512, 512, 10, 4, 512, 0.1)
        assert (tc.lr, tc.embedding_lr, tc.lm_head_lr, tc.batch_size, tc.warmup_steps, tc.max_steps) == (
            5e-4,
            5e-4,
            5e-4,
            16,
            500,
            20_000,
        )
        assert (tc.optimizer, tc.beta1, tc.beta2, tc.weight_decay, tc.grad_clip) == ("adamw", 0.9, 0.999, 0.0, 1.0)
        assert (tc.gen_benchmark_tokens, tc.gen_benchmark_runs, tc.gen_benchmark_batch) == (128, 10, 4)
        for s in (500, 501, 5000, 10_250, 19_000, 19_999):
            assert lr_multiplier(s, tc, 20_000) == pytest.approx((20_000 - s) / 19_500, abs=1e-12), s


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_every_profile_decays_linearly_to_zero_after_warmup(profile):
    from trainables.train import lr_multiplier

    tc = _plan(profile)[0]["train"]
    T, W = tc.max_steps, tc.warmup_steps
    for s in (W, (W + T) // 2, T - 1):
        assert lr_multiplier(s, tc, T) == pytest.approx((T - s) / (T - W), abs=1e-12), (profile, s)


@pytest.mark.parametrize(
    "key,value,word", [("toep_filter", "exp", "exp"), ("toep_init", "ema", "ema"), ("toep_proj_bias", False, "nobias")]
)
def test_a_key_set_alone_changes_that_key_in_every_arm_it_applies_to(key, value, word):
    trials = _plan("smoke", {key: value})
    for t in trials:
        g = t["gpt"]
        assert getattr(g, key) == value
        others = {k: getattr(g, k) for k in ("toep_filter", "toep_init", "toep_proj_bias") if k != key}
        assert others == {
            k: v for k, v in dict(toep_filter="linear", toep_init="normal", toep_proj_bias=True).items() if k != key
        }
        applies = key != "toep_proj_bias" or g.toep_proj  # biases exist only on projections
        assert t["name"].endswith(f"_{word}") == applies, t["name"]


def test_a_new_key_as_an_axis_gives_distinct_arms():
    trials = _plan("smoke", {"toep_filter": ["linear", "exp"]})
    names = [t["name"] for t in trials]
    assert len(names) == 8 and len(set(names)) == 8
    assert sum(t["gpt"].toep_filter == "exp" for t in trials) == 4


@pytest.mark.parametrize(
    "value,words",
    [
        ("toep_filter=cubic", ["toep_filter='cubic'", "linear, exp"]),
        ("toep_init=zeros", ["toep_init='zeros'", "normal, ema"]),
        ("toep_proj_bias=3", ["toep_proj_bias=3", "true or false"]),
    ],
)
def test_bad_values_exit_2_in_one_line(value, words, capsys, tmp_path):
    import study.run

    code = study.run.main(["toeplitz_flags", *SMOKE, "--set", value, "--dry-run", "--output", str(tmp_path / "out")])
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    for word in words:
        assert word in err[0], (word, err[0])
    assert not (tmp_path / "out").exists()


def test_all_results_carry_the_best_eval_and_the_cached_and_uncached_benchmark(tmp_path):
    """Three evals whose middle one is the best: the row and all_results.json hold the final eval and that best
    one, by hand; the four benchmark settings are carried as the trial logged them."""
    from study.results import collect, write_view_outputs

    spec = get_study("toeplitz_flags")
    trial = tmp_path / "trials" / "toeplitz_mean_proj"
    trial.mkdir(parents=True)
    config = dict(toep_mean=True, toep_proj=True, seed=0, mixer="toeplitz")
    (trial / "trial_config.json").write_text(json.dumps(config))
    model = dict(
        mixer="toeplitz", toep_mean=True, toep_proj=True, toep_filter="linear", toep_init="normal", toep_proj_bias=True
    )
    (trial / "config.json").write_text(
        json.dumps(dict(trial=config, model=model, params=dict(total=1000), planned_steps=30))
    )
    bench = dict(
        gen_tokens_per_s_parallel=400.0,
        gen_tokens_per_s_sequential=200.0,
        gen_tokens_per_s_uncached_parallel=100.0,
        gen_tokens_per_s_uncached_sequential=80.0,
        gen_mean_time_parallel=0.25,
        gen_mean_time_sequential=0.5,
        gen_mean_time_uncached_parallel=1.0,
        gen_mean_time_uncached_sequential=1.25,
        gen_speedup=2.0,
        gen_speedup_uncached=1.25,
        gen_cache_speedup_parallel=4.0,
        gen_cache_speedup_sequential=2.5,
    )
    evals = [
        dict(step=10, val_loss=3.0, val_bpb=2.0),
        dict(step=20, val_loss=2.7, val_bpb=1.8),
        dict(step=30, val_loss=2.85, val_bpb=1.9, train_loss=2.5, **bench),
    ]
    (trial / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in evals))
    df = collect(tmp_path, spec, outcomes={})
    row = df.iloc[0]
    assert (row["val_loss"], row["best_val_loss"], row["val_bpb"], row["best_val_bpb"]) == (2.85, 2.7, 1.9, 1.8)
    write_view_outputs(df, spec.views, tmp_path)
    got = json.loads((tmp_path / "all_results.json").read_text())["toeplitz_mean_proj"]
    assert got["training"]["eval_loss"] == 2.85 and got["training"]["eval_loss_best"] == 2.7
    assert got["training"]["eval_bpb"] == 1.9 and got["training"]["eval_bpb_best"] == 1.8
    assert (got["toep_filter"], got["toep_init"], got["toep_proj_bias"]) == ("linear", "normal", True)
    for name, path in (
        ("benchmark_parallel", "parallel"),
        ("benchmark_sequential", "sequential"),
        ("benchmark_uncached_parallel", "uncached_parallel"),
        ("benchmark_uncached_sequential", "uncached_sequential"),
    ):
        assert got[name] == dict(
            tokens_per_s=bench[f"gen_tokens_per_s_{path}"], mean_time_s=bench[f"gen_mean_time_{path}"]
        )
    assert (
        got["speedup"],
        got["speedup_uncached"],
        got["cache_speedup_parallel"],
        got["cache_speedup_sequential"],
    ) == (2.0, 1.25, 4.0, 2.5)
