"""The compute-matched scaling fit (reports/scaling_fit.py) on synthetic data whose answers we chose: the fitter
recovers known parameters, N*(C) is the brute-force minimum of L(N, C / 6N), the crossover is scipy's root of the
difference of the two arms' compute-optimal losses, the held-out check passes clean data and fails a shifted budget,
and the report view shows it all, escaped."""

import math

import numpy as np
import pandas as pd
import pytest
from reports_synth import EVIL, trial_row, write_study
from scipy.optimize import brentq, check_grad, minimize_scalar

from reports import scaling_fit as sf
from reports.scaling_fit import Fit

# Chinchilla's own fit (Hoffmann et al. 2022, approach 3), the reference truth for recovery
CHINCHILLA = Fit(a=math.log(406.4), b=math.log(410.7), e=math.log(1.69), alpha=0.34, beta=0.28)
# Two arms at the cpu profile's scale: the variant is ahead at small compute and behind past C ~ 1.95e12
BASE = Fit(a=math.log(400), b=math.log(300), e=math.log(1.0), alpha=0.5, beta=0.4)
VARIANT = Fit(a=math.log(250), b=math.log(250), e=math.log(1.5), alpha=0.5, beta=0.4)
BUDGETS, RATIOS = (1.5e11, 3e11, 6e11), (1.5, 4.5, 13.5)


def isoflop(fit: Fit, budgets, ratios):
    """(N, D, L) of an isoFLOP design: N = sqrt(C / 6r), D = C / 6N, noise-free losses."""
    N = np.array([math.sqrt(C / (6 * r)) for C in budgets for r in ratios])
    D = np.array([C / (6 * math.sqrt(C / (6 * r))) for C in budgets for r in ratios])
    return N, D, fit.loss(N, D)


def trials(noise=0.0, shift_top=0.0, seed=0, base_name="baseline", variant_name="variant"):
    """A study's trials table: both arms at every (C, r) cell; shift_top multiplies the largest budget's losses."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in BUDGETS:
        for r in RATIOS:
            N = math.sqrt(C / (6 * r))
            D = C / (6 * N)
            for arm, f in ((base_name, BASE), (variant_name, VARIANT)):
                L = float(f.loss(N, D)) * math.exp(rng.normal(0, noise)) * (1 + shift_top * (C == BUDGETS[-1]))
                rows.append(
                    trial_row(
                        f"{arm}_C{C:g}_r{r:g}",
                        arm,
                        0,
                        L,
                        params_total=N,
                        tokens_trained=D,
                        compute=C,
                        tokens_per_param=r,
                        match="flops",
                    )
                )
    return rows


def test_objective_gradient_matches_finite_differences():
    N, D, L = isoflop(CHINCHILLA, np.logspace(18, 22, 5), (5, 20, 80))
    args = (np.log(N), np.log(D), np.log(L * 1.01), sf.HUBER_DELTA)
    for x in ([6.0, 6.0, 0.5, 0.3, 0.3], [5.0, 7.0, 0.0, 0.5, 0.2]):
        err = check_grad(lambda t: sf._objective(t, *args)[0], lambda t: sf._objective(t, *args)[1], np.array(x))
        assert err < 1e-6


def test_objective_is_huber_of_log_residuals():
    """Small residuals cost r^2 / 2, large ones delta (|r| - delta / 2): the textbook Huber loss."""
    N, D = np.array([1e8, 1e9]), np.array([1e10, 1e11])
    L = CHINCHILLA.loss(N, D)
    theta = np.array([CHINCHILLA.a, CHINCHILLA.b, CHINCHILLA.e, CHINCHILLA.alpha, CHINCHILLA.beta])
    r = np.array([5e-4, -0.02])  # one inside delta = 1e-3, one outside
    loss, _ = sf._objective(theta, np.log(N), np.log(D), np.log(L) - r, 1e-3)
    assert loss == pytest.approx(0.5 * 5e-4**2 + 1e-3 * (0.02 - 0.5e-3), rel=1e-6)


def test_fit_recovers_known_parameters():
    N, D, L = isoflop(CHINCHILLA, np.logspace(18, 22, 5), (2, 5, 20, 80, 200))
    got = sf.fit(N, D, L).params()
    for key, want in CHINCHILLA.params().items():
        assert got[key] == pytest.approx(want, rel=0.01), key


def test_optimal_size_is_the_brute_force_minimum():
    for fit in (CHINCHILLA, BASE, VARIANT):
        for C in (1e11, 6e11, 1e21):
            best = minimize_scalar(
                lambda logn: float(fit.loss(math.exp(logn), C / (6 * math.exp(logn)))),
                bounds=(math.log(10), math.log(C)),
                method="bounded",
                options=dict(xatol=1e-9),
            )
            grid = np.logspace(1, math.log10(C / 6), 200_001)
            brute = grid[np.argmin(fit.loss(grid, C / (6 * grid)))]
            assert fit.optimal_size(C) == pytest.approx(math.exp(best.x), rel=1e-4)
            assert fit.optimal_size(C) == pytest.approx(brute, rel=1e-3)


def test_crossover_is_the_root_of_the_loss_difference():
    root = math.exp(
        brentq(
            lambda lc: float(VARIANT.optimal_loss(math.exp(lc)) - BASE.optimal_loss(math.exp(lc))),
            math.log(1e11),
            math.log(1e14),
        )
    )
    x = sf.crossover(BASE, VARIANT, [BASE] * 3, [VARIANT] * 3, 1.5e11, 6e13, c_next_high=6e12)
    assert x["at"] == pytest.approx(root, rel=1e-3)
    assert x["n_star"] == pytest.approx(float(VARIANT.optimal_size(root)), rel=1e-3)
    assert x["ci"] == pytest.approx([x["at"]] * 2) and x["share_crossing"] == 1
    assert x["variant_ahead_at_low"] and not x["variant_ahead_at_high"]
    none = sf.crossover(BASE, VARIANT, [BASE], [VARIANT], 1.5e11, 1e12, c_next_high=6e12)
    assert none["at"] is None and none["share_crossing"] == 0


def test_bootstrap_of_clean_data_collapses_to_the_truth():
    res = sf.analyse_flops(pd.DataFrame(trials()), "val_bpb", "baseline", n_boot=8)
    for arm, truth in (("baseline", BASE), ("variant", VARIANT)):
        e = res["arms"][arm]
        for key, want in truth.params().items():
            p = e["params"][key]
            assert p["value"] == pytest.approx(want, rel=0.02), (arm, key)
            assert p["ci"][0] <= p["value"] * 1.001 and p["ci"][1] >= p["value"] * 0.999
        top = e["optimal"][2]
        assert top["C"] == 6e11 and top["N"] == pytest.approx(float(truth.optimal_size(6e11)), rel=0.02)


def test_held_out_extrapolates_on_clean_data_and_fails_on_a_shifted_budget():
    clean = sf.analyse_flops(pd.DataFrame(trials(noise=0.002)), "val_bpb", "baseline", n_boot=30)
    h = clean["arms"]["baseline"]["held_out"]
    assert h["budget"] == 6e11 and h["fitted_on"] == [1.5e11, 3e11] and h["n_fitted"] == 6
    assert h["extrapolates"], h["best"]
    assert clean["sentences"]["held_out"]["baseline"].startswith("the fit extrapolates")
    shifted = sf.analyse_flops(pd.DataFrame(trials(noise=0.002, shift_top=0.1)), "val_bpb", "baseline", n_boot=30)
    h = shifted["arms"]["baseline"]["held_out"]
    assert not h["extrapolates"] and h["inside"] == 0, h["best"]
    assert shifted["sentences"]["held_out"]["baseline"].startswith("the fit did not predict the held-out budget")


def test_crossover_found_in_data_and_said_in_words():
    res = sf.analyse_flops(pd.DataFrame(trials()), "val_bpb", "baseline", n_boot=8)
    (x,) = res["crossovers"]
    assert x["at"] == pytest.approx(1.946e12, rel=0.05)
    assert res["sentences"]["crossover"]["variant"].startswith("variant crosses baseline at C = 1.9")


def test_not_a_compute_matched_study_has_no_view():
    rows = [trial_row("a", "a", 0, 1.5, budget=1e6), trial_row("b", "b", 0, 1.4, budget=2e6)]
    assert sf.analyse_flops(pd.DataFrame(rows), "val_bpb", "a") == {}


def test_report_shows_fits_held_out_and_crossover_escaped(tmp_path, monkeypatch):
    from reports.build import build_report

    monkeypatch.setattr(sf, "N_BOOT", 8)  # the report's resamples: few here, for a quick test
    d = write_study(
        tmp_path,
        "scaling",
        trials(noise=0.001, variant_name=EVIL),
        family="scaling",
        baseline="baseline",
        meta_extra={"views": ["scaling", "scaling_flops"]},
    )
    build_report(d, png=False)
    page = (d / "report.html").read_text()
    assert "Compute-matched scaling" in page and "Fitted parameters" in page and "N*(C)" in page
    assert "the fit extrapolates" in page or "the fit did not predict the held-out budget" in page
    assert "crosses baseline at C = " in page or "no crossover between" in page
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
