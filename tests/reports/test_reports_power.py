"""The seed planner's statistics (reports/power.py) against references: the textbook sample-size formula (normal
approximation plus the t correction), a direct simulation of the t-test's power, and the noise of simulated pilots
whose sd is known, measured by hand with numpy."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reports.power import pilot_noise, read_pilot, seeds_needed, t_power


def textbook_n(effect: float, alpha: float, power: float, paired: bool) -> int:
    """Seeds per arm by the normal approximation with Guenther's (1981) t correction: paired (one sample of
    differences) n = ((z_{1-a/2} + z_power) / effect)^2 + z_{1-a/2}^2 / 2; two-sample, per group,
    n = 2 ((z_{1-a/2} + z_power) / effect)^2 + z_{1-a/2}^2 / 4. effect = D / sd."""
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    n = ((za + zb) / effect) ** 2 + za**2 / 2 if paired else 2 * ((za + zb) / effect) ** 2 + za**2 / 4
    return max(2, math.ceil(n))


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "two_sample"])
@pytest.mark.parametrize("alpha", [0.05, 0.025, 0.0125])  # 0.05 over 1, 2 and 4 comparisons (Holm's first step)
@pytest.mark.parametrize("power", [0.8, 0.9])
def test_seeds_needed_is_the_textbook_number(paired, alpha, power):
    """The exact noncentral-t answer sits at the approximation's number or one above it (the approximation
    rounds a little low near an integer), over effect sizes from 0.05 to 3 sd."""
    for effect in np.geomspace(0.05, 3, 25):
        sd = 0.02  # in bpb: the answer depends on D / sd only
        n = seeds_needed(effect * sd, sd, alpha, power, paired)
        expected = textbook_n(effect, alpha, power, paired)
        assert expected <= n <= expected + 1, (effect, n, expected)


def simulated_power(n: int, mde: float, sd: float, alpha: float, paired: bool, draws: int = 20_000) -> float:
    """The share of simulated studies whose two-sided t-test rejects: n per-seed differences ~ N(mde, sd) for the
    paired test, two groups of n ~ N(0, sd) and N(mde, sd) for the two-sample one (scipy's own tests)."""
    rng = np.random.default_rng(n)
    if paired:
        p = stats.ttest_1samp(rng.normal(mde, sd, (draws, n)), 0.0, axis=1).pvalue
    else:
        a, b = rng.normal(0.0, sd, (draws, n)), rng.normal(mde, sd, (draws, n))
        p = stats.ttest_ind(b, a, axis=1, equal_var=True).pvalue
    return float((p < alpha).mean())


@pytest.mark.parametrize(
    "mde, sd, alpha, paired",
    [(0.01, 0.008, 0.05, True), (0.01, 0.006, 0.025, False), (0.02, 0.015, 0.0125, True)],
    ids=["paired", "two_sample_holm2", "paired_holm4"],
)
def test_the_test_reaches_the_power_at_n_and_not_at_n_minus_one(mde, sd, alpha, paired):
    """Simulated studies of the test itself: at the returned n it rejects at least 80% of the time, at n - 1 less
    (20,000 draws: a standard error of 0.3 points; the cases step by 4 points or more)."""
    n = seeds_needed(mde, sd, alpha, 0.8, paired)
    at_n, below = simulated_power(n, mde, sd, alpha, paired), simulated_power(n - 1, mde, sd, alpha, paired)
    assert at_n > 0.8 - 0.01 and below < 0.8, (n, at_n, below)
    assert abs(at_n - t_power(n, mde, sd, alpha, paired)) < 0.015
    assert abs(below - t_power(n - 1, mde, sd, alpha, paired)) < 0.015


def test_power_tends_to_the_normal_formula_and_ignores_the_sign():
    n, mde, sd, alpha = 20_000, 0.0004, 0.02, 0.05
    z = stats.norm.ppf(1 - alpha / 2)
    ncp = mde / sd * math.sqrt(n)
    normal = stats.norm.cdf(ncp - z) + stats.norm.cdf(-ncp - z)
    assert t_power(n, mde, sd, alpha, True) == pytest.approx(normal, abs=1e-3)
    assert t_power(n, -mde, sd, alpha, True) == t_power(n, mde, sd, alpha, True)


def test_noiseless_and_hopeless_cases():
    assert seeds_needed(0.01, 0.0) == 2  # no noise: the first two seeds show any difference
    assert seeds_needed(0.01, 1e-6) == 2
    assert seeds_needed(1e-7, 0.02) is None  # past 100,000 seeds: said so, not searched on


# ----------------------------------------------------------------------------- the noise of a pilot


def pilot(seeds: int, sd_seed: float, sd_noise: float, *, shared: bool = True, arms=("softmax", "softmax1"), rng=0):
    """A pilot's trials: each arm's val_bpb = its mean + the seed's own effect (shared by the arms when they run the
    same seeds, as the same data order does) + the trial's own noise."""
    rng = np.random.default_rng(rng)
    seed_effect = rng.normal(0, sd_seed, 2 * seeds)
    rows = []
    for i, arm in enumerate(arms):
        for s in range(seeds):
            seed = s if shared else s + i * seeds
            bpb = 2.0 + 0.01 * i + seed_effect[seed] + rng.normal(0, sd_noise)
            rows.append(dict(trial=f"{arm}_s{seed}", variant=arm, seed=seed, status="done", val_bpb=bpb))
    return pd.DataFrame(rows)


def test_paired_noise_is_the_sd_of_the_per_seed_differences():
    trials = pilot(400, sd_seed=0.05, sd_noise=0.01)
    noise, why = pilot_noise(trials, "softmax", "val_bpb")
    b = trials[trials.variant == "softmax"].set_index("seed")["val_bpb"]
    a = trials[trials.variant == "softmax1"].set_index("seed")["val_bpb"]
    assert why == "" and noise.paired and noise.pair_by == "seed" and noise.n == 400 and noise.arm == "softmax1"
    assert noise.sd == pytest.approx(np.std((a - b).to_numpy(), ddof=1), rel=1e-12)
    assert noise.sd == pytest.approx(math.sqrt(2) * 0.01, rel=0.15)  # the known sd: the seed's effect cancels


def test_unpaired_noise_is_the_pooled_sd_within_arms():
    trials = pilot(400, sd_seed=0.05, sd_noise=0.01, shared=False)
    noise, _ = pilot_noise(trials, "softmax", "val_bpb")
    var = trials.groupby("variant")["val_bpb"].var(ddof=1)
    assert not noise.paired and noise.n == 400
    assert noise.sd == pytest.approx(math.sqrt(var.mean()), rel=1e-12)  # equal groups: the pooled variance is the mean
    assert noise.sd == pytest.approx(math.hypot(0.05, 0.01), rel=0.15)


def test_the_noisiest_arm_sets_the_paired_sd_and_data_seed_pairs_first():
    trials = pilot(6, sd_seed=0.05, sd_noise=0.01, arms=("base", "a", "b"))
    trials.loc[trials.variant == "b", "val_bpb"] += np.linspace(-0.05, 0.05, 6)  # b's differences vary most
    noise, _ = pilot_noise(trials, "base", "val_bpb")
    diffs = {
        v: trials[trials.variant == v].set_index("seed")["val_bpb"]
        - trials[trials.variant == "base"].set_index("seed")["val_bpb"]
        for v in ("a", "b")
    }
    assert noise.arm == "b" and noise.sd == pytest.approx(diffs["b"].std(ddof=1), rel=1e-12)
    # with a data_seed column the arms pair on it, not on seed
    trials["data_seed"] = trials["seed"]
    trials["seed"] = range(len(trials))
    noise, _ = pilot_noise(trials, "base", "val_bpb")
    assert noise.paired and noise.pair_by == "data_seed" and noise.sd == pytest.approx(diffs["b"].std(ddof=1))


def test_a_pilot_with_one_seed_an_arm_is_not_usable():
    trials = pilot(2, sd_seed=0.05, sd_noise=0.01)
    trials.loc[trials.trial == "softmax1_s1", "status"] = "failed"
    noise, why = pilot_noise(trials, "softmax", "val_bpb")
    assert noise is None and "softmax1" in why and "1 finished seed" in why
    assert pilot_noise(trials, "softmax", "val_loss") == (None, "its trials have no val_loss column")


def test_a_pilot_at_several_budgets_pairs_within_each(tmp_path):
    """scaling's trials keep their budget in target_params (budget is None once solved): the arms pair by seed within
    a budget, and the budgets' own differences stay out of the noise."""
    parts = []
    for i, size in enumerate((1e5, 4e5)):
        part = pilot(5, sd_seed=0.05, sd_noise=0.01, arms=("baseline", "variant"), rng=i)
        parts.append(part.assign(val_bpb=part["val_bpb"] - 0.5 * i, budget=None, target_params=size))
    trials = pd.concat(parts, ignore_index=True)
    trials.to_parquet(tmp_path / "trials.parquet")
    noise, _ = pilot_noise(read_pilot(tmp_path)[0], "baseline", "val_bpb")
    by_hand = []
    for _, g in trials.groupby("target_params"):
        wide = g.pivot(index="seed", columns="variant", values="val_bpb")
        by_hand.append(np.std((wide["variant"] - wide["baseline"]).to_numpy(), ddof=1))
    assert noise.paired and noise.n == 5 and noise.sd == pytest.approx(max(by_hand), rel=1e-12)
