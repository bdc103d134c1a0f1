"""Sequential seeding's decision (reports/sequential.py) and its rounds (study/sequential.py), no Ray: its intervals against scipy's paired t interval at
the Bonferroni level, its outcome on tables written by hand, and by simulation the error rate it promises: a null
arm is declared different in at most alpha of 2,000 simulated studies over all its looks, a large effect is decided
at the first look, and a null arm with a small D keeps getting seeds until the cap."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reports import sequential as sq
from study.sequential import next_round, trial_arm

ALPHA, K, STUDIES = 0.05, 10, 2000


def table(diffs: dict[str, list[float]], shared_sd=0.02, seed=3):
    """Trials of a baseline and arms on data_seeds 0..n-1: each seed moves every arm alike (shared_sd), the arm's
    value is the baseline's plus its given difference at that seed."""
    n = max(len(d) for d in diffs.values())
    shared = np.random.default_rng(seed).normal(1.5, shared_sd, n)
    rows = [dict(variant="base", seed=s, data_seed=s, init_seed=s, status="done", val_bpb=shared[s]) for s in range(n)]
    for v, ds in diffs.items():
        rows += [
            dict(variant=v, seed=s, data_seed=s, init_seed=s, status="done", val_bpb=shared[s] + d)
            for s, d in enumerate(ds)
        ]
    df = pd.DataFrame(rows)
    return df.assign(trial=[f"{v}_s{s}" for v, s in zip(df["variant"], df["seed"])])


def test_interval_is_the_paired_t_interval_at_the_split_level():
    d = np.array([0.011, -0.004, 0.007, 0.002, 0.009])
    low, high = sq.intervals(d.mean(), d.std(ddof=1), len(d), ALPHA, K)
    ref = stats.ttest_1samp(d, 0).confidence_interval(confidence_level=1 - ALPHA / (K - 1))
    assert (float(low), float(high)) == pytest.approx((ref.low, ref.high), rel=1e-12)
    assert sq.look_alpha(ALPHA, K) == pytest.approx(0.05 / 9)


def test_decide_on_a_table():
    big = [-0.5, -0.5001]  # 0.5 better at both seeds: interval far below 0 already at 2 pairs
    same = [1e-5, -1e-5, 2e-5, -2e-5, 0.0, 1e-5]  # tiny differences around 0: inside +/-D
    noisy = [0.03, -0.04]  # holds 0, and reaches far past D = 0.01
    capped = [0.03, -0.04, 0.02, -0.03, 0.04, -0.02, 0.01, -0.01, 0.03, -0.03]  # still so at K = 10
    out = sq.decide(table(dict(big=big, same=same, noisy=noisy, capped=capped)), "base", mde=0.01).set_index("variant")
    assert out.loc["big", ["outcome", "status", "n_pairs", "look"]].tolist() == ["differs", "decided", 2, 1]
    assert out.loc["big", "why"].startswith("better: the interval")
    assert out.loc[["same", "noisy", "capped"], "outcome"].tolist() == ["equivalent", "undecided", "capped"]
    assert out.loc["capped", "status"] == "capped" and out.loc["capped", "n_pairs"] == K
    d = np.array(noisy)
    half = stats.t.ppf(1 - ALPHA / (K - 1) / 2, 1) * d.std(ddof=1) / math.sqrt(2)
    assert out.loc["noisy", ["ci_low", "ci_high"]].tolist() == pytest.approx([d.mean() - half, d.mean() + half])
    assert sq.undecided_arms(out.reset_index()) == ["noisy"]
    # mode max: a lower value is worse
    worse = sq.decide(table(dict(big=big)), "base", mde=0.01, mode="max")
    assert worse["why"].iloc[0].startswith("worse")


def test_an_arm_with_fewer_than_two_pairs_is_undecided():
    df = table(dict(a=[0.1, 0.2]))
    df = df[~((df["variant"] == "a") & (df["seed"] == 1))]
    out = sq.decide(df, "base", mde=0.01)
    assert out[["outcome", "n_pairs"]].iloc[0].tolist() == ["undecided", 1]
    assert "needs 2" in out["why"].iloc[0]


@pytest.mark.parametrize("bad", [dict(mde=0), dict(mde=0.01, alpha=1.5), dict(mde=0.01, max_seeds=1)])
def test_bad_options_raise(bad):
    with pytest.raises(ValueError):
        sq.decide(table(dict(a=[0.1, 0.2])), "base", **bad)


def test_a_null_arm_is_declared_different_in_at_most_alpha_of_studies():
    """The union bound promises <= alpha; 2,000 studies put a binomial sd of ~0.005 around the rate, so the observed
    rate must stay below alpha plus three of those. D small (0.5 sd) keeps the arm looking until K: the hardest
    case for the error rate, as every look can err."""
    outcome, seeds = sq.simulate(0.0, 1.0, mde=0.5, alpha=ALPHA, max_seeds=K, studies=STUDIES)
    rate = (outcome == "differs").mean()
    assert rate <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / STUDIES)
    assert rate <= ALPHA  # in fact 0.026 here, 0.030 over 200,000 studies: Bonferroni over correlated looks is
    # conservative
    # the same looks at the unsplit level alpha err far more often: the split is what holds the rate
    d = np.random.default_rng(0).normal(0.0, 1.0, size=(STUDIES, K))
    n = np.arange(2, K + 1)
    t = np.stack([d[:, :k].mean(1) / (d[:, :k].std(1, ddof=1) / math.sqrt(k)) for k in n], axis=1)
    naive = (np.abs(t) > stats.t.ppf(1 - ALPHA / 2, n - 1)).any(axis=1).mean()
    assert naive > 2 * ALPHA


def test_a_null_arm_gets_seeds_until_the_cap():
    outcome, seeds = sq.simulate(0.0, 1.0, mde=0.5, alpha=ALPHA, max_seeds=K, studies=STUDIES)
    kept_going = outcome == "capped"
    assert kept_going.mean() >= 1 - ALPHA
    assert (seeds[kept_going] == K).all()
    assert seeds.mean() >= 0.95 * K  # the rest: a rare early "differs", or a pair of seeds that happened to agree


def test_a_large_effect_is_decided_after_the_first_round():
    """At 2 pairs the interval has 1 degree of freedom: t_(1 - 0.05/18, 1) / sqrt(2) ~ 81 sds wide each side, so a
    difference of 500 sds is decided at the first look in (nearly) every study."""
    outcome, seeds = sq.simulate(-1.0, 0.002, mde=0.01, alpha=ALPHA, max_seeds=K, studies=STUDIES)
    assert (outcome == "differs").mean() >= 0.99
    assert (seeds[outcome == "differs"] == 2).all()


def test_a_true_null_with_a_wide_d_is_declared_equivalent_before_the_cap():
    outcome, seeds = sq.simulate(0.0, 1.0, mde=5.0, alpha=ALPHA, max_seeds=K, studies=STUDIES)
    assert (outcome == "equivalent").mean() >= 0.95
    assert seeds.mean() < K


def test_next_round_takes_the_undecided_arms_and_the_baseline_on_the_next_seed():
    from study.run import RunOptions, find_study, make_plan
    from study.service import narrowed

    plan = make_plan(find_study("softmax1_ab"), RunOptions(profile="smoke", seeds=4, output="/tmp/unused"))
    base = plan.spec.baseline_arm
    arms = {trial_arm(plan, t) for t in plan.trials}
    assert base in arms and len(arms) == 2
    (arm,) = arms - {base}
    undecided = pd.DataFrame(dict(variant=[arm], status=["undecided"]))
    picked = next_round(plan, undecided, 2)
    assert sorted(t["name"] for t in picked) == sorted(f"softmax1_ab_{v}_s2" for v in (base, arm))
    assert next_round(plan, undecided.assign(status="decided"), 2) == []
    # the round's Tune experiment: the plan's grid narrowed to these trials
    round_2 = narrowed(plan, picked)
    assert round_2.axes == {"softmax1": [False, True], "seed": [2]} and round_2.trials == picked
    (one,) = [t for t in picked if t["name"].endswith(f"_{arm}_s2")]
    assert narrowed(plan, [one]).axes == {"softmax1": [True], "seed": [2]}
    # a set that is no product of axis values keeps the values it uses (build_tuner grids over the trials)
    mixed = [t for t in plan.trials if t["name"] in (f"softmax1_ab_{base}", f"softmax1_ab_{arm}_s1")]
    assert narrowed(plan, mixed).axes == {"softmax1": [False, True], "seed": [0, 1]}


def test_the_help_names_the_default_cap():
    from study.run import build_parser

    assert f"(default {sq.DEFAULT_MAX_SEEDS})" in build_parser().format_help().replace("\n", " ")
