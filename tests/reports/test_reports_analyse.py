"""The statistics, on data whose answers are known by hand or from published examples."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reports.analyse import (
    compare_to_baseline,
    fit_power_law,
    holm,
    mean_ci,
    natural_key,
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
