"""The statistics, on data whose answers are known by hand or from published examples."""

import math

import numpy as np
import pandas as pd
import pytest
from reports_synth import paired_rows
from scipy import stats

from reports.analyse import (
    compare_to_baseline,
    fit_power_law,
    holm,
    mean_ci,
    natural_key,
    paired_test,
    pareto_front,
    perplexity_ratio,
    power_law,
    summarise_groups,
    welch_test,
)


def test_pareto_front_hand_made():
    #            H      A     B     C     D     E(=B)  F     G(nan)
    x = np.array([0.5, 1.0, 2.0, 3.0, 4.0, 2.0, 5.0, np.nan])
    y = np.array([6.0, 5.0, 3.0, 4.0, 1.0, 3.0, 1.0, 0.0])
    # C is beaten by B (smaller and better), F by D (same loss, bigger), G has no size
    assert pareto_front(x, y).tolist() == [True, True, True, False, True, True, False, False]


def test_pareto_front_edge_cases():
    assert pareto_front([], []).tolist() == []
    assert pareto_front([1.0], [2.0]).tolist() == [True]
    # same size, different loss: only the better one
    assert pareto_front([1.0, 1.0], [2.0, 1.5]).tolist() == [False, True]
    # a bigger model that is worse is never on the front
    assert pareto_front([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).tolist() == [True, False, False]


def test_mean_ci_matches_hand_computed_t_interval():
    r = mean_ci([1, 2, 3, 4, 5])
    # mean 3, s = sqrt(2.5), se = s / sqrt(5) = 0.70711, t(0.975, 4) = 2.776 (table) -> half-width 1.9632
    assert r["n"] == 5 and r["mean"] == pytest.approx(3.0)
    assert r["std"] == pytest.approx(math.sqrt(2.5))
    assert r["ci_low"] == pytest.approx(3 - 2.776 * 0.70711, abs=2e-3)
    assert r["ci_high"] == pytest.approx(3 + 2.776 * 0.70711, abs=2e-3)
    assert r["ci_low"] == pytest.approx(1.036757, abs=1e-5)


def test_mean_ci_one_value_has_no_interval_and_nans_are_ignored():
    r = mean_ci([2.0, np.nan])
    assert r["n"] == 1 and r["mean"] == 2.0 and math.isnan(r["ci_low"]) and math.isnan(r["ci_high"])
    assert mean_ci([])["n"] == 0


def test_welch_matches_published_example():
    # Wikipedia, "Welch's t-test", example 2: t = 2.46, df = 24.99, p = 0.021
    a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    w = welch_test(a, b)
    assert w["diff"] == pytest.approx(np.mean(b) - np.mean(a))
    assert w["df"] == pytest.approx(24.99, abs=0.01)
    assert w["p_value"] == pytest.approx(0.021, abs=5e-4)
    ref = stats.ttest_ind(b, a, equal_var=False)  # an independent implementation, to many digits
    assert w["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (w["ci_low"], w["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_welch_needs_two_per_group():
    w = welch_test([1.0], [2.0, 3.0])
    assert w["diff"] == pytest.approx(1.5) and math.isnan(w["p_value"]) and math.isnan(w["ci_low"])


def test_paired_test_matches_scipy_and_the_hand_formula():
    a = [1.50, 1.47, 1.53, 1.52, 1.49]
    b = [1.497, 1.4665, 1.5278, 1.5181, 1.4872]
    r = paired_test(a, b)
    ref = stats.ttest_rel(b, a)
    ci = ref.confidence_interval(0.95)
    assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    # by hand: differences -0.003 -0.0035 -0.0022 -0.0019 -0.0028, mean -0.00268, t on n - 1 = 4 degrees of freedom
    d = np.array([-0.003, -0.0035, -0.0022, -0.0019, -0.0028])
    assert r["diff"] == pytest.approx(-0.00268) and r["sd_diff"] == pytest.approx(d.std(ddof=1))
    assert r["df"] == 4 and r["n_pairs"] == 5
    # one pair, or a pair with a missing value, counts as no pair
    one = paired_test([1.0, np.nan], [2.0, 3.0])
    assert one["n_pairs"] == 1 and one["diff"] == 1.0 and math.isnan(one["p_value"]) and math.isnan(one["ci_low"])


def _ttest_rel_by(trials, variant, baseline, key="data_seed", metric="val_bpb"):
    """scipy's paired test of variant - baseline on the trials matched by `key` (inner join)."""
    done = trials[trials["status"] == "done"]
    a = done[done["variant"] == variant].set_index(key)[metric]
    b = done[done["variant"] == baseline].set_index(key)[metric]
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").sort_index()
    return stats.ttest_rel(both["a"], both["b"]), len(both)


def test_arms_sharing_a_data_seed_are_paired_and_the_pairing_shows_the_effect():
    t = pd.DataFrame(paired_rows())
    c = compare_to_baseline(t, "base").set_index("variant")
    for variant in ("small", "same"):
        ref, n = _ttest_rel_by(t, variant, "base")
        ci = ref.confidence_interval(0.95)
        assert c.loc[variant, "test"] == "paired t" and c.loc[variant, "n_pairs"] == n == 4
        assert c.loc[variant, "p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert (c.loc[variant, "ci_low"], c.loc[variant, "ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
        arm = t.loc[t["variant"] == variant, "val_bpb"]
        assert c.loc[variant, "sd"] == pytest.approx(arm.std(ddof=1))
        # the shared seed noise (sd 0.02) is what pairing removes: the differences keep ~sqrt(2) x 3e-4 of it
        assert c.loc[variant, "sd_diff"] < c.loc[variant, "sd"] / 20
    assert c.loc["small", "verdict"] == "better" and c.loc["same", "verdict"].startswith("within noise")
    # Welch's test on the same trials cannot tell the 0.002 from the seeds' 0.02
    base, small = (t.loc[t["variant"] == v, "val_bpb"] for v in ("base", "small"))
    assert stats.ttest_ind(small, base, equal_var=False).pvalue > 0.5
    # Holm over the two arms, by hand: the smaller p times 2, the larger times 1, never decreasing
    p = c["p_value"].to_dict()
    lo, hi = sorted(p, key=p.get)
    assert c.loc[lo, "p_holm"] == pytest.approx(min(1, 2 * p[lo]))
    assert c.loc[hi, "p_holm"] == pytest.approx(max(min(1, 2 * p[lo]), p[hi]))


def test_a_trial_without_a_partner_is_left_out_and_too_few_pairs_fall_back_to_welch():
    t = pd.DataFrame(paired_rows(effects={"base": 0.0, "gap": -0.002, "lone": 0.0}))
    # gap's data seed 3 failed: 3 pairs, its baseline partner left out; lone ran seeds 0 and 7: one pair, Welch on all
    t.loc[t["trial"] == "gap_s3", ["status", "val_bpb"]] = ["failed", np.nan]
    t.loc[t["trial"] == "lone_s1", "data_seed"] = 7
    t = t[~t["trial"].isin(["lone_s2", "lone_s3"])].reset_index(drop=True)
    c = compare_to_baseline(t, "base").set_index("variant")
    ref, n = _ttest_rel_by(t, "gap", "base")
    assert n == 3 and c.loc["gap", "test"] == "paired t" and c.loc["gap", "n_pairs"] == 3
    assert (c.loc["gap", "n"], c.loc["gap", "n_baseline"]) == (3, 4)
    assert c.loc["gap", "p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    base, lone = (t.loc[t["variant"] == v, "val_bpb"] for v in ("base", "lone"))
    welch = stats.ttest_ind(lone, base, equal_var=False)
    assert c.loc["lone", "test"] == "Welch" and c.loc["lone", "n_pairs"] == 0 and math.isnan(c.loc["lone", "sd_diff"])
    assert c.loc["lone", "p_value"] == pytest.approx(welch.pvalue, rel=1e-9)
    assert c.loc["lone", "diff"] == pytest.approx(lone.mean() - base.mean())


def test_pairs_follow_data_seed_then_init_seed_and_older_tables_pair_by_seed():
    t = pd.DataFrame(paired_rows())
    # the arm's data seeds permuted against its seeds: pairs follow data_seed (the batches), not seed
    arm = t["variant"] == "small"
    t.loc[arm, "data_seed"] = t.loc[arm, "seed"].map({0: 2, 1: 0, 2: 3, 3: 1})
    c = compare_to_baseline(t, "base").set_index("variant")
    ref, _ = _ttest_rel_by(t, "small", "base")
    by_seed, _ = _ttest_rel_by(t, "small", "base", key="seed")
    assert c.loc["small", "p_value"] == pytest.approx(ref.pvalue, rel=1e-9) and ref.pvalue != by_seed.pvalue
    # one data seed for all, init seeds 0..3: the init seed tells the trials apart
    one_order = pd.DataFrame(paired_rows()).assign(data_seed=0)
    c = compare_to_baseline(one_order, "base").set_index("variant")
    ref, n = _ttest_rel_by(one_order, "small", "base", key="init_seed")
    assert n == 4 and c.loc["small", "test"] == "paired t"
    assert c.loc["small", "p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    # both seeds repeat: no one-to-one match, so Welch
    c = compare_to_baseline(one_order.assign(init_seed=0), "base").set_index("variant")
    assert set(c["test"]) == {"Welch"}
    # a table from before init_seed and data_seed: its seed set both, so it pairs by seed; a gap in the columns too
    old = pd.DataFrame(paired_rows()).drop(columns=["init_seed", "data_seed"])
    ref, _ = _ttest_rel_by(old, "small", "base", key="seed")
    assert compare_to_baseline(old, "base").set_index("variant").loc["small", "p_value"] == pytest.approx(ref.pvalue)
    gaps = pd.DataFrame(paired_rows())
    gaps.loc[gaps["seed"] == 2, "data_seed"] = np.nan
    assert compare_to_baseline(gaps, "base").set_index("variant").loc["small", "p_value"] == pytest.approx(ref.pvalue)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.5, np.nan])
    assert out[0] == pytest.approx(0.5) and math.isnan(out[1])


def _synthetic_law(seed, E=1.7, A=400.0, alpha=0.34, noise=0.003):
    N = np.repeat([1e6, 3e6, 1e7, 3e7, 1e8], 3)  # 5 budgets x 3 seeds
    return N, E + A * N**-alpha + np.random.default_rng(seed).normal(0, noise, len(N))


def test_power_law_fit_recovers_known_parameters():
    E, A, alpha = 1.7, 400.0, 0.34
    f = fit_power_law(*_synthetic_law(0), n_boot=300)
    assert f["E"] == pytest.approx(E, abs=0.02)
    assert f["alpha"] == pytest.approx(alpha, abs=0.01)
    assert f["A"] == pytest.approx(A, rel=0.05)
    assert power_law([1e7], f)[0] == pytest.approx(E + A * 1e7**-alpha, abs=0.005)


def test_power_law_intervals_contain_the_truth():
    # a 95% interval misses 1 time in 20 by design: check it over 20 noisy draws of the same law
    truth = {"E": 1.7, "A": 400.0, "alpha": 0.34}
    hits = {k: 0 for k in truth}
    for seed in range(20):
        f = fit_power_law(*_synthetic_law(seed), n_boot=200, seed=seed)
        for k, v in truth.items():
            hits[k] += f[f"{k}_ci"][0] <= v <= f[f"{k}_ci"][1]
    assert all(h >= 16 for h in hits.values()), hits  # 19 expected; 15 or fewer is < 1% likely


def test_power_law_fit_exact_without_noise_and_needs_four_sizes():
    N = np.array([1e5, 1e6, 1e7, 1e8])
    f = fit_power_law(N, 2.0 + 50 * N**-0.5, n_boot=50)
    assert (f["E"], f["A"], f["alpha"]) == pytest.approx((2.0, 50.0, 0.5), rel=1e-4)
    assert fit_power_law(N[:3], 2.0 + 50 * N[:3] ** -0.5) is None


def _trials(groups):
    rows = [
        dict(trial=f"{v}_{i}", variant=v, seed=i, status="done", val_bpb=x, val_loss=x)
        for v, xs in groups.items()
        for i, x in enumerate(xs)
    ]
    return pd.DataFrame(rows)


def test_compare_to_baseline_labels_noise_and_effects():
    t = _trials(
        {
            "base": [1.00, 1.01, 0.99, 1.00],
            "same": [1.005, 0.995, 1.00, 1.01],
            "good": [0.90, 0.91, 0.89, 0.90],
            "one": [0.5],
        }
    )
    c = compare_to_baseline(t, "base").set_index("variant")
    assert c.loc["good", "verdict"] == "better" and c.loc["good", "diff"] == pytest.approx(-0.1)
    assert c.loc["good", "test"] == "paired t" and c.loc["one", "test"] == "Welch"  # seeds 0..3 pair; one run cannot
    assert c.loc["same", "verdict"] == "within noise"
    assert c.loc["one", "verdict"] == "single run: no interval"
    g = summarise_groups(t, baseline="base")
    assert g["variant"].tolist()[0] == "base" and g.set_index("variant").loc["good", "mean"] == pytest.approx(0.9)


def test_perplexity_ratio_and_the_pre_registered_line():
    t = _trials({"softmax": [3.00, 3.02, 2.98], "softmax1": [2.90, 2.92, 2.88]})
    r = perplexity_ratio(t, "softmax", "softmax1")
    # e^(-0.1) = 0.904837; se = sqrt(2 * 0.02^2 / 3) = 0.016330, t(0.975, 4) = 2.776445
    half = 2.776445 * math.sqrt(2 * 0.02**2 / 3)
    assert r["ratio"] == pytest.approx(math.exp(-0.1))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((math.exp(-0.1 - half), math.exp(-0.1 + half)), rel=1e-5)
    assert r["verdict"].startswith("meets the 5% criterion")
    t2 = _trials({"softmax": [3.00, 3.02, 2.98], "softmax1": [2.99, 3.01, 2.97]})
    assert perplexity_ratio(t2, "softmax", "softmax1")["verdict"].startswith("does not meet")


def test_perplexity_ratio_is_e_to_the_loss_difference_in_nats():
    # softmax1 0.06 nats lower: perplexity ratio e^-0.06 = 0.941765, past the 5% line. The note's 2^loss read on nats
    # would say 2^-0.06 = 0.959264: not past it. In bits (loss / ln 2) 2^loss gives e^-0.06 again.
    t = _trials({"softmax": [3.000, 3.002, 2.998], "softmax1": [2.940, 2.942, 2.938]})
    r = perplexity_ratio(t, "softmax", "softmax1")
    assert r["ratio"] == pytest.approx(0.941765, abs=1e-6)
    assert 2 ** (2.940 / math.log(2) - 3.000 / math.log(2)) == pytest.approx(0.941765, abs=1e-6)
    assert 2**-0.06 == pytest.approx(0.959264, abs=1e-6) and 2**-0.06 > 0.95
    # se = sqrt(2 x 0.002^2 / 3) = 0.0016330, t(0.975, 4) = 2.776445: upper end e^(-0.06 + 0.0045339) = 0.946044
    assert r["ci_high"] == pytest.approx(0.946044, abs=1e-6)
    assert r["verdict"].startswith("meets the 5% criterion")


def test_natural_order():
    assert sorted(["p100", "p20", "p0"], key=natural_key) == ["p0", "p20", "p100"]
