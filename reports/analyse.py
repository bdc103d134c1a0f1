"""
The statistics a report rests on, written out so they can be checked by hand:
Pareto fronts, t-intervals, paired and Welch t-tests, Holm's correction and a power-law fit
with bootstrap intervals. Plain numpy/pandas in, plain numbers out.
"""

import math
import re

import numpy as np
import pandas as pd
from scipy import optimize, stats

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE

# -----------------------------------------------------------------------------
# Pareto front


def pareto_front(x, y):
    """Boolean mask of the points no other point beats on both x and y (both minimised).

    A point is on the front when no other point has x' <= x and y' <= y with one of
    them strictly smaller. Exact duplicates of a front point are on the front too.
    Points with a NaN coordinate are never on it.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    on_front = np.zeros(len(x), dtype=bool)
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    order = ok[np.lexsort((y[ok], x[ok]))]  # by x, then y: a point can only be beaten by one before it
    best_y, last = math.inf, None
    for i in order:
        if y[i] < best_y:
            on_front[i], best_y, last = True, y[i], i
        elif last is not None and x[i] == x[last] and y[i] == y[last]:
            on_front[i] = True
    return on_front


# -----------------------------------------------------------------------------
# Means, intervals, tests


def mean_ci(values, confidence=CONFIDENCE):
    """Mean with a two-sided Student-t interval. One value has no interval (NaN bounds)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return dict(n=0, mean=math.nan, std=math.nan, ci_low=math.nan, ci_high=math.nan)
    mean = float(v.mean())
    if n < 2:
        return dict(n=1, mean=mean, std=math.nan, ci_low=math.nan, ci_high=math.nan)
    std = float(v.std(ddof=1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return dict(n=n, mean=mean, std=std, ci_low=mean - half, ci_high=mean + half)


def welch_test(a, b, confidence=CONFIDENCE):
    """Welch's unequal-variance t-test of mean(b) - mean(a): difference, its interval, two-sided p.

    Needs two finite values in each group; otherwise the difference comes back with NaN
    interval and p-value (one run per arm cannot tell a difference from noise).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    na, nb = len(a), len(b)
    diff = float(b.mean() - a.mean()) if na and nb else math.nan
    out = dict(diff=diff, ci_low=math.nan, ci_high=math.nan, p_value=math.nan, df=math.nan, n_a=na, n_b=nb)
    if na < 2 or nb < 2:
        return out
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    if se == 0:  # identical constant groups: no noise to speak of
        out.update(ci_low=diff, ci_high=diff, p_value=1.0 if diff == 0 else 0.0)
        return out
    # Welch-Satterthwaite degrees of freedom
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    t = diff / se
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    out.update(ci_low=diff - half, ci_high=diff + half, p_value=float(2 * stats.t.sf(abs(t), df)), df=float(df))
    return out


def paired_test(a, b, confidence=CONFIDENCE):
    """Paired t-test of b - a, a[i] and b[i] one pair: the mean difference, its t interval, two-sided p and the
    differences' sd. A pair with a non-finite value is left out; fewer than two pairs give NaN interval and p."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    diff = float(d.mean()) if n else math.nan
    out = dict(diff=diff, ci_low=math.nan, ci_high=math.nan, p_value=math.nan, df=math.nan, n_pairs=n, sd_diff=math.nan)
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    out.update(df=float(n - 1), sd_diff=sd)
    if se == 0:  # every pair differs by the same amount: no noise to speak of
        out.update(ci_low=diff, ci_high=diff, p_value=1.0 if diff == 0 else 0.0)
        return out
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * se
    out.update(ci_low=diff - half, ci_high=diff + half, p_value=float(2 * stats.t.sf(abs(diff / se), n - 1)))
    return out


def holm(p_values):
    """Holm-Bonferroni adjusted p-values (NaNs pass through and do not count as tests)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))  # monotone: never below an earlier one
        out[i] = running
    return out


def verdict(diff, p_value, p_adjusted, mode="min"):
    """Words for a difference from the baseline. Lower is better when mode is 'min'."""
    if not math.isfinite(p_adjusted):
        return "single run: no interval"
    if p_value >= ALPHA:
        return "within noise"
    if p_adjusted >= ALPHA:  # the raw interval may exclude 0, but not once we count the other variants
        return "within noise after Holm correction"
    better = diff < 0 if mode == "min" else diff > 0
    return "better" if better else "worse"


# -----------------------------------------------------------------------------
# Grouping trials into configs and comparing them with the baseline


def natural_key(s):
    """'p20' < 'p100' and 'v4096' < 'v32768': sort runs of digits as numbers."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(s))]


def sorted_variants(variants, baseline=None):
    """Distinct variants in natural order, the baseline first."""
    vs = sorted({str(v) for v in variants if pd.notna(v)}, key=natural_key)
    if baseline in vs:
        vs.remove(baseline)
        vs.insert(0, baseline)
    return vs


def group_keys(trials):
    """A config is a variant, and a budget too when a variant is run at several budgets."""
    keys = ["variant"]
    if "budget" in trials and trials.groupby("variant")["budget"].nunique().max() > 1:
        keys.append("budget")
    for key in ("compute", "tokens_per_param"):  # a compute-matched study's design cell (scaling, match=flops)
        if key in trials and trials.groupby("variant")[key].nunique().max() > 1:
            keys.append(key)
    return keys


def summarise_groups(trials, metric="val_bpb", baseline=None):
    """Mean and 95% t-interval of the metric per config, over the finished trials."""
    done = trials[trials["status"] == "done"]
    keys = group_keys(trials)
    rows = []
    if metric not in done or done.empty:
        return pd.DataFrame(columns=keys + ["n", "mean", "std", "ci_low", "ci_high"])
    for key, g in done.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), **mean_ci(g[metric])})
    out = pd.DataFrame(rows)
    order = {v: i for i, v in enumerate(sorted_variants(out["variant"], baseline))}
    sort_cols = ["_order"] + keys[1:]
    return (
        out.assign(_order=out["variant"].astype(str).map(order))
        .sort_values(sort_cols)
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def arms_vs_baseline(trials, baseline, metric="val_bpb"):
    """(stratum, variant, baseline values, variant values) for every finished variant but the baseline.

    A stratum is {} or {"budget": b}: arms are compared within a budget when the study has several.
    """
    done = trials[trials["status"] == "done"]
    if not baseline or metric not in done or baseline not in set(done["variant"].astype(str)):
        return
    keys = group_keys(trials)
    strata = done.groupby(keys[1:], sort=True) if len(keys) > 1 else [((), done)]
    for stratum, g in strata:
        stratum = dict(zip(keys[1:], stratum if isinstance(stratum, tuple) else (stratum,)))
        base = g.loc[g["variant"].astype(str) == baseline, metric]
        for variant in sorted_variants(g["variant"], baseline):
            if variant != baseline:
                yield stratum, variant, base, g.loc[g["variant"].astype(str) == variant, metric]


PAIR_KEYS = ("data_seed", "init_seed")


def seed_keys(trials):
    """Each trial's data_seed and init_seed; a table from before the two (no such column, or a gap) gives its seed,
    which set both."""
    seed = pd.to_numeric(trials["seed"], errors="coerce")
    out = pd.DataFrame(index=trials.index)
    for key in PAIR_KEYS:
        out[key] = pd.to_numeric(trials[key], errors="coerce").fillna(seed) if key in trials else seed
    return out


def pair_up(base, arm, keys):
    """(baseline values, arm values) of the trials that trained on the same batches: partners share a data_seed, and
    an init_seed too where a data_seed repeats within an arm. None when even both seeds repeat (no one-to-one
    match). base, arm: metric Series indexed as keys; a trial with no finite value or no partner is left out."""
    base, arm = (pd.to_numeric(v, errors="coerce") for v in (base, arm))
    base, arm = base[np.isfinite(base)], arm[np.isfinite(arm)]
    for cols in (["data_seed"], ["data_seed", "init_seed"]):
        kb, ka = keys.loc[base.index, cols].dropna(), keys.loc[arm.index, cols].dropna()
        if kb.duplicated().any() or ka.duplicated().any():
            continue
        both = kb.assign(_b=base).merge(ka.assign(_a=arm), on=cols).sort_values(cols)
        return both["_b"].to_numpy(), both["_a"].to_numpy()
    return None


def compare_to_baseline(trials, baseline, metric="val_bpb", mode="min"):
    """Each variant's difference from the baseline, Holm-adjusted across variants.

    Paired where two or more of the arm's trials have a baseline partner trained on the same batches (pair_up): a
    t-test on the differences of the pairs, trials without a partner left out (n_pairs says how many pairs). Welch's
    test on all finished trials otherwise. `test` names the one used; sd and sd_baseline are the seed-to-seed sds,
    sd_diff the paired differences' sd (what pairing leaves of that noise). Within a budget when the study has several.
    """
    cols = ["variant", "baseline", "test", "n", "n_baseline", "n_pairs", "diff", "ci_low", "ci_high", "p_value"]
    cols += ["p_holm", "verdict", "sd", "sd_baseline", "sd_diff"]
    keys = seed_keys(trials)
    rows = []
    for stratum, variant, base, arm in arms_vs_baseline(trials, baseline, metric):
        pairs = pair_up(base, arm, keys)
        w = welch_test(base, arm)  # its counts are the finished trials of each
        r = paired_test(*pairs) if pairs is not None and len(pairs[0]) >= 2 else None
        r = r or dict(w, n_pairs=0, sd_diff=math.nan)
        rows.append(
            dict(
                variant=variant,
                baseline=baseline,
                test="paired t" if r["n_pairs"] else "Welch",
                n=w["n_b"],
                n_baseline=w["n_a"],
                n_pairs=r["n_pairs"],
                diff=r["diff"],
                ci_low=r["ci_low"],
                ci_high=r["ci_high"],
                p_value=r["p_value"],
                sd=mean_ci(arm)["std"],
                sd_baseline=mean_ci(base)["std"],
                sd_diff=r["sd_diff"],
                **stratum,
            )
        )
    if not rows:
        return pd.DataFrame(columns=cols)
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out["p_value"])
    out["verdict"] = [verdict(d, p, ph, mode) for d, p, ph in zip(out["diff"], out["p_value"], out["p_holm"])]
    return out


# -----------------------------------------------------------------------------
# Ratios and the threshold rule: "an arm must beat the baseline by X%"
#
# A ratio of two arms is exp of the Welch difference of their logs: the ratio of geometric means, with an
# interval that is exp of the Welch interval. On perplexity (e^loss) that is the loss difference itself, so
# softmax1's pre-registered 5% on perplexity is the same rule as any study's threshold on its metric.


def log_ratio(log_a, log_b):
    """exp(mean(log_b) - mean(log_a)) with its 95% interval and Welch's p, from values already on a log scale."""
    w = welch_test(log_a, log_b)
    ratio, lo, hi = (math.exp(w[k]) if math.isfinite(w[k]) else math.nan for k in ("diff", "ci_low", "ci_high"))
    return dict(ratio=ratio, ci_low=lo, ci_high=hi, p_value=w["p_value"], n=w["n_b"], n_baseline=w["n_a"])


def percent(fraction):
    return f"{100 * fraction:g}%"


def threshold_verdict(ratio, ci_low, ci_high, threshold, mode="min", what="threshold"):
    """(met, words): met when the whole interval of the ratio is past 1 - threshold (min) or 1 + threshold (max);
    None when a point estimate past the line has no interval to confirm it."""
    line, side, other = (1 - threshold, "below", "above") if mode == "min" else (1 + threshold, "above", "below")
    past = (lambda v: v < line) if mode == "min" else (lambda v: v > line)
    if not math.isfinite(ratio):
        return None, f"no ratio: the {what} needs finished trials with a positive value in both arms"
    if not past(ratio):
        return False, f"does not meet the {percent(threshold)} {what}"
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return None, f"point estimate {side} {line:g} from single runs: not shown (no interval)"
    if past(ci_high if mode == "min" else ci_low):
        return True, f"meets the {percent(threshold)} {what}: the whole interval is {side} {line:g}"
    return False, f"point estimate {side} {line:g}, but the interval reaches {other} it: not shown"


def threshold_table(trials, baseline, metric, mode, threshold):
    """Each arm's metric / the baseline's (geometric means, 95% interval) and whether it meets the threshold."""
    rows = []
    for stratum, variant, base, arm in arms_vs_baseline(trials, baseline, metric):
        base, arm = base.astype(float), arm.astype(float)
        positive = (base.dropna() > 0).all() and (arm.dropna() > 0).all()
        r = log_ratio(np.log(base), np.log(arm)) if positive else log_ratio([], [])
        met, words = threshold_verdict(r["ratio"], r["ci_low"], r["ci_high"], threshold, mode)
        rows.append(dict(variant=variant, baseline=baseline, **stratum, **r, met=met, verdict=words))
    return rows


# -----------------------------------------------------------------------------
# Power law L(N) = E + A * N^-alpha
#
# For a fixed alpha the model is linear in (E, A), so we solve those by least squares
# on a grid of alphas and keep the best (variable projection). No starting guess to
# get wrong, no optimiser to diverge, and the bootstrap vectorises over resamples.

ALPHA_GRID = np.geomspace(1e-3, 3.0, 600)


def _fit_grid(x, L):
    """Best (E, A', alpha) for each row of x, L (shape [B, n]), x = N / N_ref. Returns arrays [B]."""
    X = x[:, None, :] ** -ALPHA_GRID[None, :, None]  # [B, G, n]
    n = x.shape[1]
    # closed-form 2x2 normal equations for L = E + A' X, per (resample, alpha)
    sx, sy = X.sum(-1), L.sum(-1)[:, None]
    sxx, sxy = (X * X).sum(-1), (X * L[:, None, :]).sum(-1)
    det = n * sxx - sx**2
    with np.errstate(divide="ignore", invalid="ignore"):
        A = (n * sxy - sx * sy) / det
        E = (sy - A * sx) / n
    sse = ((L[:, None, :] - E[..., None] - A[..., None] * X) ** 2).sum(-1)
    sse = np.where(np.isfinite(sse), sse, np.inf)
    g = np.clip(sse.argmin(1), 1, len(ALPHA_GRID) - 2)
    # parabolic refinement in log(alpha) through the best grid point and its neighbours
    b = np.arange(len(g))
    y0, y1, y2 = sse[b, g - 1], sse[b, g], sse[b, g + 1]
    h = np.log(ALPHA_GRID[1] / ALPHA_GRID[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = 0.5 * h * (y0 - y2) / (y0 - 2 * y1 + y2)
    shift = np.where(np.isfinite(shift), np.clip(shift, -h, h), 0.0)
    alpha = ALPHA_GRID[g] * np.exp(shift)
    # with alpha refined, (E, A') once more by least squares
    Xa = x ** -alpha[:, None]
    mx, my = Xa.mean(1), L.mean(1)
    A = ((Xa - mx[:, None]) * (L - my[:, None])).sum(1) / ((Xa - mx[:, None]) ** 2).sum(1)
    E = my - A * mx
    return E, A, alpha


def _polish(x, L, alpha):
    """Refine alpha from the grid by a bounded 1-D search on the profiled squared error."""

    def ls(a):
        X = x**-a
        A = np.cov(X, L, bias=True)[0, 1] / X.var()
        return L.mean() - A * X.mean(), A

    def sse(log_a):
        E, A = ls(math.exp(log_a))
        return float(((L - E - A * x ** -math.exp(log_a)) ** 2).sum())

    h = math.log(ALPHA_GRID[1] / ALPHA_GRID[0])
    res = optimize.minimize_scalar(
        sse, bounds=(math.log(alpha) - 2 * h, math.log(alpha) + 2 * h), method="bounded", options=dict(xatol=1e-10)
    )
    alpha = math.exp(res.x)
    E, A = ls(alpha)
    return float(E), float(A), alpha


def fit_power_law(N, L, n_boot=500, seed=0, confidence=CONFIDENCE):
    """Fit L(N) = E + A N^-alpha; percentile bootstrap intervals for E, A, alpha.

    The bootstrap resamples residuals (inflated by sqrt(n / (n - 3)) for the three fitted
    parameters) around the fitted curve, so the design, which N were run, stays fixed;
    resampling trials instead undercovers with 2-3 seeds per N (~80% for a nominal 95%
    in our checks). Needs 4 distinct N: 3 parameters plus one degree of freedom.
    """
    N, L = np.asarray(N, dtype=float), np.asarray(L, dtype=float)
    ok = np.isfinite(N) & np.isfinite(L) & (N > 0)
    N, L = N[ok], L[ok]
    levels = np.unique(N)
    if len(levels) < 4:
        return None
    n_ref = float(np.exp(np.log(N).mean()))  # fit in N / N_ref so x^-alpha stays near 1
    x = N / n_ref
    E, A, alpha = (float(v[0]) for v in _fit_grid(x[None], L[None]))
    E, A, alpha = _polish(x, L, alpha)
    fitted = E + A * x**-alpha
    resid = L - fitted
    rng = np.random.default_rng(seed)
    scale = math.sqrt(len(L) / max(len(L) - 3, 1))
    Lb = fitted + scale * resid[rng.integers(0, len(L), size=(n_boot, len(L)))]
    xb = np.broadcast_to(x, Lb.shape)
    # in chunks, so the [resamples, grid, trials] arrays stay a few MB
    chunk = max(1, int(2e6 // (len(ALPHA_GRID) * len(L))))
    parts = [_fit_grid(np.ascontiguousarray(xb[i : i + chunk]), Lb[i : i + chunk]) for i in range(0, n_boot, chunk)]
    Eb, Ab, alphab = (np.concatenate(p) for p in zip(*parts))
    Ab_abs = Ab * n_ref**alphab  # back to A in units of raw N
    lo, hi = 100 * (0.5 - confidence / 2), 100 * (0.5 + confidence / 2)

    def interval(v):
        v = v[np.isfinite(v)]
        return [float(np.percentile(v, lo)), float(np.percentile(v, hi))] if len(v) else [math.nan, math.nan]

    return dict(
        E=E,
        A=A * n_ref**alpha,
        alpha=alpha,
        E_ci=interval(Eb),
        A_ci=interval(Ab_abs),
        alpha_ci=interval(alphab),
        n=int(len(L)),
        n_levels=int(len(levels)),
        n_boot=int(n_boot),
        method="residual bootstrap, percentile intervals",
        rmse=float(np.sqrt(np.mean(resid**2))),
        n_min=float(N.min()),
        n_max=float(N.max()),
    )


def power_law(N, fit):
    """Evaluate a fit from fit_power_law at N."""
    return fit["E"] + fit["A"] * np.asarray(N, dtype=float) ** -fit["alpha"]


# -----------------------------------------------------------------------------
# softmax1: the pre-registered criterion

PPL_THRESHOLD = 0.05  # "if it has improved by 5%, I will call that interesting"


def perplexity_ratio(trials, baseline, treatment, loss="val_loss", threshold=PPL_THRESHOLD):
    """Perplexity of treatment / baseline, perplexity = e^loss (loss in nats), against the threshold rule.

    With seeds the ratio is exp(mean loss difference), the ratio of geometric-mean
    perplexities, and its interval is exp of the Welch interval of the loss difference.
    """
    done = trials[trials["status"] == "done"]
    if loss not in done:
        return None
    a = done.loc[done["variant"].astype(str) == baseline, loss]
    b = done.loc[done["variant"].astype(str) == treatment, loss]
    if a.notna().sum() == 0 or b.notna().sum() == 0:
        return None
    r = log_ratio(a, b)  # a loss in nats is already the log of the perplexity
    _, v = threshold_verdict(r["ratio"], r["ci_low"], r["ci_high"], threshold, "min", what="criterion")
    if math.isfinite(r["p_value"]):
        v += f"; difference from {baseline}: p = {r['p_value']:.3g} (Welch)"
    return dict(
        baseline=baseline, treatment=treatment, **r, threshold=1 - threshold, base="e (loss in nats)", verdict=v
    )


# -----------------------------------------------------------------------------
# One study, all of the above. The dict is what results.json holds and what the
# figures and the page are drawn from.


def _records(df):
    return df.to_dict(orient="records") if df is not None and len(df) else []


def _has_values(trials, col, at_least=1):
    return col in trials and trials[col].nunique(dropna=True) >= at_least


def _achieved_share(group) -> dict:
    """The nano-head share the trials were built with (the requested proportion rounded to whole heads), when
    recorded (config.json's model, since issue 14)."""
    share = group["nanohead_share_achieved"].dropna() if "nanohead_share_achieved" in group else ()
    return {"nanohead_share_achieved": float(share.mean())} if len(share) else {}


def _fits(trials, metric, by_size=False):
    """Power laws per variant when the study ran 4+ budgets, or 4+ sizes with by_size (the scaling view).

    Not by size for other studies: a search's sizes vary with its architecture, not as a budget.
    """
    done = trials[(trials["status"] == "done") & trials[metric].notna()] if metric in trials else trials.iloc[:0]
    if "budget" in done:
        levels = done["budget"].nunique()
    else:
        levels = done["params_total"].nunique() if by_size and "params_total" in done else 0
    if levels < 4:
        return {}
    fits = {}
    for variant in sorted_variants(done["variant"]):
        g = done[done["variant"] == variant]
        for x in ("params_total", "params_non_embedding"):
            if x in g:
                f = fit_power_law(g[x], g[metric])
                if f is not None:
                    fits.setdefault(variant, {})[x] = f
    return fits


def softmax1_arms(study):
    """(baseline, treatment) variant names for the softmax1 A/B, or None."""
    t = study.trials
    variants = sorted_variants(t["variant"])
    if len(variants) < 2:
        return None
    base = study.baseline
    if base is None and "softmax1" in t:
        off = t.loc[t["softmax1"].astype(str).str.lower().isin(["false", "0"]), "variant"]
        base = str(off.iloc[0]) if len(off) else None
    base = base or variants[0]
    others = [v for v in variants if v != base]
    treatment = "softmax1" if "softmax1" in others else others[0]
    return base, treatment


# The Toeplitz note's metrics: eval loss, runtime, throughput, generation speed (the report shows all but the times)
TOEPLITZ_METRICS = (
    "val_loss",
    "val_bpb",
    "wall_s",
    "samples_per_s",
    "gen_tokens_per_s_parallel",
    "gen_tokens_per_s_sequential",
    "gen_speedup",
    "gen_mean_time_parallel",
    "gen_mean_time_sequential",
)


def toeplitz_table(trials, baseline=None):
    """Per variant: the note's metrics (TOEPLITZ_METRICS), means over seeds."""
    cols = TOEPLITZ_METRICS
    done = trials[trials["status"] == "done"]
    rows = []
    for variant in sorted_variants(done["variant"], baseline):
        g = done[done["variant"] == variant]
        row = {"variant": variant, "n": len(g)}
        for flag in ("toep_mean", "toep_proj"):
            if flag in g:
                row[flag] = g[flag].iloc[0]
        for c in cols:
            if c in g:
                s = mean_ci(g[c])
                row[c], row[c + "_ci"] = s["mean"], [s["ci_low"], s["ci_high"]]
        rows.append(row)
    return rows


def vocab_depth_table(trials, metric):
    """Candidates with the share of parameters in the embedding, the lm_head and the blocks.

    One row per config: per variant, and per budget too when the study ran several (scaling).
    """
    need = {"params_total", "params_embedding", "params_lm_head"}
    if not need <= set(trials.columns):
        return []
    keys = group_keys(trials)
    order = {v: i for i, v in enumerate(sorted_variants(trials["variant"]))}
    rows = []
    groups = sorted(trials.groupby(keys, dropna=False), key=lambda kv: (order[kv[1]["variant"].iloc[0]], *kv[0][1:]))
    for _, g in groups:
        total, emb, head = (float(g[c].median()) for c in ("params_total", "params_embedding", "params_lm_head"))
        done = g[g["status"] == "done"]
        s = mean_ci(done[metric]) if metric in done else mean_ci([])
        row = {"variant": g["variant"].iloc[0]}
        for c in ("vocab_size", "n_layer", "n_embd", "tie_embeddings", "budget"):
            if c in g:
                row[c] = g[c].iloc[0]
        if len(keys) > 1:
            row["by_budget"] = True
        blocks = total - emb - head
        row.update(
            params_total=total,
            params_embedding=emb,
            params_lm_head=head,
            params_blocks=blocks,
            share_embedding=emb / total if total else math.nan,
            share_lm_head=head / total if total else math.nan,
            share_blocks=blocks / total if total else math.nan,
            n=s["n"],
            mean=s["mean"],
            ci_low=s["ci_low"],
            ci_high=s["ci_high"],
        )
        rows.append(row)
    return rows


def probe_table(trials):
    """Mean and interval of every probe_* column per variant (the probes issue adds them)."""
    probes = [c for c in trials.columns if c.startswith("probe_") and pd.api.types.is_numeric_dtype(trials[c])]
    done = trials[trials["status"] == "done"]
    rows = []
    for variant in sorted_variants(done["variant"]):
        g = done[done["variant"] == variant]
        for p in probes:
            s = mean_ci(g[p])
            if s["n"]:
                rows.append({"variant": variant, "probe": p, **s})
    return rows


# -----------------------------------------------------------------------------
# What each report view adds to the analysis (reports/sections.py registers them): study -> dict for res


def nanohead_analysis(study):
    """The note's plot: the metric against the nano-head proportion, when the study varied it."""
    t, metric = study.trials, study.metric
    if not _has_values(t, "nanohead_proportion", 2) or metric not in t:
        return {}
    done = t[(t["status"] == "done") & t[metric].notna()]
    return {
        "nanohead": [
            {"nanohead_proportion": float(p), **_achieved_share(g), **mean_ci(g[metric])}
            for p, g in done.groupby("nanohead_proportion")
        ]
    }


def softmax1_analysis(study):
    arms = softmax1_arms(study)
    ratio = perplexity_ratio(study.trials, *arms, threshold=study.threshold or PPL_THRESHOLD) if arms else None
    return {"softmax1": ratio} if ratio else {}


def toeplitz_analysis(study):
    return {"toeplitz": toeplitz_table(study.trials, study.baseline)}


def vocab_depth_analysis(study):
    return {"vocab_depth": vocab_depth_table(study.trials, study.metric)}


def scaling_analysis(study):
    """The candidates' parameter shares, and power laws over model size even without a budget column; not for a
    compute-matched study, whose sizes train on different tokens (the scaling_flops view fits L(N, D) instead)."""
    matched = "compute" in study.trials and study.trials["compute"].notna().any()
    return {**vocab_depth_analysis(study), "fits": {} if matched else _fits(study.trials, study.metric, by_size=True)}


def single_run_search(study, res) -> bool:
    """A search whose every config ran once: a per-config mean has no interval there, so its views go."""
    return bool(study.optuna) and all(g["n"] <= 1 for g in res.get("groups", []))


IMPORTANCE_SEEDS = 8  # fANOVA fits a random forest: its importances move from seed to seed (optuna#2757)


def importance_spread(ostudy, seeds=range(IMPORTANCE_SEEDS), target=None) -> list[dict]:
    """Each parameter's fANOVA importance (normalised to sum to 1 per fit) as mean and sd over fits with different
    forest seeds, most important first: one fit's numbers vary from call to call."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    runs = [get_param_importances(ostudy, evaluator=FanovaImportanceEvaluator(seed=s), target=target) for s in seeds]
    rows = []
    for param in dict.fromkeys(k for run in runs for k in run):
        v = np.array([run.get(param, 0.0) for run in runs], dtype=float)
        sd = float(v.std(ddof=1)) if len(v) > 1 else math.nan
        rows.append(dict(param=param, mean=float(v.mean()), sd=sd, min=float(v.min()), max=float(v.max()), fits=len(v)))
    return sorted(rows, key=lambda r: -r["mean"])


def optuna_target(o: dict, metric: str):
    """(target, its name) for optuna's plots and importances: a multi-objective study's first value (the metric),
    None for a single objective."""
    return (lambda t: t.values[0], metric) if len(o["directions"]) > 1 else (None, metric)


def optuna_analysis(study):
    o = study.optuna
    if not o:
        return {}
    out = {"name": o["name"], "directions": o["directions"], "n_trials": len(o["trials"]), "importances": []}
    complete = o["trials"][o["trials"]["state"] == "complete"] if len(o["trials"]) else o["trials"]
    target, _ = optuna_target(o, study.metric)
    if len(complete) >= 2:
        try:  # fANOVA needs parameters that actually varied
            out["importances"] = importance_spread(o["study"], target=target)
        except Exception as e:
            out["importance_note"] = f"parameter importances unavailable ({e.__class__.__name__}: {e})"
    else:
        out["importance_note"] = "parameter importances need two or more complete trials"
    out["searched"] = [c[len("param_") :] for c in o["trials"].columns if c.startswith("param_")]
    out["leaders"], out["confirmation"] = search_leaders(study.trials, study.metric, study.mode, out["searched"])
    return {"optuna": out}


# -----------------------------------------------------------------------------
# Pruning audit: a random share of trials that ASHA never stops shows what its stops cost

AUDIT_MIN = 3  # audited trials below this: no statistics, one plain line
FLAG_EXCESS = 0.25  # a bin stopped this much more often than its final rank justifies is flagged
FLAG_MIN_STOPPABLE, FLAG_MIN_AUDITED = 4, 2  # trials a bin needs before it can be flagged


def rung_values(curves: pd.DataFrame, metric: str, iteration: int) -> pd.Series:
    """trial -> the metric at its ITERATION-th report (Tune's training_iteration: one report per eval, in step
    order), for the trials that reached it."""
    c = curves[curves[metric].notna()].sort_values(["trial", "step"])
    nth = c.groupby("trial").nth(iteration - 1)
    return nth.set_index("trial")[metric] if len(nth) else pd.Series(dtype=float)


def asha_would_stop(values: pd.Series, reduction_factor: float, mode: str) -> pd.Series:
    """ASHA's rule at a rung, over every trial's value there: stop when the reward (the metric, negated for min)
    is below the (1 - 1/rf) percentile of the rewards (ray.tune.schedulers.async_hyperband._Bracket.cutoff)."""
    reward = values if mode == "max" else -values
    cutoff = np.nanpercentile(reward.to_numpy(dtype=float), (1 - 1 / reduction_factor) * 100)
    return reward < cutoff


def wilson(successes: int, n: int, confidence=CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion (nan, nan for n = 0)."""
    if n == 0:
        return math.nan, math.nan
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _bins(values: pd.Series) -> pd.Series:
    """A searched key's values in bins: thirds of its range of values (by quantile) for a number with more than
    three distinct values, else one bin per value."""
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and values.nunique() > 3:
        codes = pd.qcut(values, 3, labels=False, duplicates="drop")
        span = values.groupby(codes).agg(["min", "max"])  # each bin named by the values it holds
        return codes.map(lambda c: f"{span.loc[c, 'min']:.3g} to {span.loc[c, 'max']:.3g}")
    return values.astype(str)


def pruning_audit(study) -> dict | None:
    """What ASHA's stops cost, measured on the audited trials (never stopped): per rung, Kendall's tau between
    their metric there and at the end, and the share of those ASHA would have stopped there that end in the final
    top-k; and per searched key's bin, whether it is stopped more often than its final rank justifies.
    None for a study without an audit (study.json's "asha" with audit_fraction > 0)."""
    asha = study.meta.get("asha")
    t, metric, mode = study.trials, study.metric, study.mode
    if not isinstance(asha, dict) or not asha.get("audit_fraction") or "audited" not in t:
        return None
    rf, max_t = float(asha["reduction_factor"]), int(asha["max_t"])
    audited = t[t["audited"].fillna(False).astype(bool)]
    final = t[(t["status"] == "done") & t[metric].notna()].set_index("trial")[metric]
    out = dict(
        audit_fraction=asha["audit_fraction"],
        n_trials=len(t),
        n_audited=len(audited),
        milestones=[m for m in asha["milestones"] if m < max_t],
        reduction_factor=rf,
        rungs=[],
        bins=[],
        flags=[],
    )
    audited_final = final[final.index.isin(audited["trial"])]
    out["n_audited_final"] = len(audited_final)
    if len(audited_final) < AUDIT_MIN:
        out["too_few"] = (
            f"too few audited trials to say anything: {len(audited_final)} finished (of {len(audited)} audited, "
            f"{len(t)} trials); at least {AUDIT_MIN} are needed. Raise --set audit_fraction or --num-samples."
        )
        return out
    k = max(1, math.ceil(len(final) / rf))
    sign = 1 if mode == "min" else -1
    top_k = set((sign * final).nsmallest(k).index)
    out["k"], out["n_final"] = k, len(final)
    for m in out["milestones"]:
        values = rung_values(study.curves, metric, m)
        stop = asha_would_stop(values, rf, mode)
        a = [n for n in audited_final.index if n in values.index]
        tau, p = stats.kendalltau(values[a], audited_final[a]) if len(a) >= 2 else (math.nan, math.nan)
        stopped = [n for n in a if stop[n]]
        hits = sum(n in top_k for n in stopped)
        lo, hi = wilson(hits, len(stopped))
        out["rungs"].append(
            dict(
                milestone=m,
                n_at_rung=len(values),
                n_audited=len(a),
                tau=float(tau),
                tau_p=float(p),
                would_stop=len(stopped),
                in_top_k=hits,
                chance=hits / len(stopped) if stopped else math.nan,
                ci_low=lo,
                ci_high=hi,
            )
        )
    # per bin of each searched key: the stopped share beyond the study's, against the bottom-half share beyond 1/2
    keys = [str(k) for k in asha.get("keys") or []]
    stoppable = t[~t["audited"].fillna(False).astype(bool) & t["status"].isin(["done", "stopped"])]
    base_stop = float((stoppable["status"] == "stopped").mean()) if len(stoppable) else math.nan
    bottom = audited_final.rank(ascending=mode == "min", method="average") > len(audited_final) / 2
    base_bottom = float(bottom.mean())
    for key in [k for k in keys if k in t]:
        bins = _bins(t.set_index("trial")[key].dropna())
        for b in dict.fromkeys(bins.sort_values()):
            names = set(bins.index[bins == b])
            s = stoppable[stoppable["trial"].isin(names)]
            a = bottom[bottom.index.isin(names)]
            row = dict(
                key=key,
                bin=b,
                n_stoppable=len(s),
                stopped_share=float((s["status"] == "stopped").mean()) if len(s) else math.nan,
                n_audited=len(a),
                bottom_half_share=float(a.mean()) if len(a) else math.nan,
            )
            row["excess"] = (row["stopped_share"] - base_stop) - (row["bottom_half_share"] - base_bottom)
            row["flagged"] = bool(
                len(s) >= FLAG_MIN_STOPPABLE and len(a) >= FLAG_MIN_AUDITED and row["excess"] >= FLAG_EXCESS
            )
            out["bins"].append(row)
            if row["flagged"]:
                out["flags"].append(
                    f"{key} in {b}: ASHA stopped {row['stopped_share']:.0%} of its {len(s)} trials (the study: "
                    f"{base_stop:.0%}), but {row['bottom_half_share']:.0%} of its {len(a)} audited trials end in "
                    f"the bottom half (all audited: {base_bottom:.0%}): stopped more often than its final rank "
                    f"justifies"
                )
    out["stopped_share"], out["bottom_half_share"] = base_stop, base_bottom
    return out


LEADERS = 5  # the search's best configs the report lists


def seed_values(row, metric) -> list:
    """A trial's values of metric, one per seed (its METRIC_seedS columns), for a trial of several seeds."""
    seeds = int(row["seeds"]) if "seeds" in row and pd.notna(row["seeds"]) else 1
    names = [c for c in row.index if re.fullmatch(rf"{re.escape(metric)}_seed[0-9]+", str(c))]
    return [row[c] for c in names if pd.notna(row[c])] if seeds > 1 else []


def search_leaders(trials, metric, mode, searched, top=LEADERS):
    """An Optuna search's best finished trials by metric, and its confirmation re-runs (rows with confirm_of, best
    first): each with its searched values and, for a trial of several seeds (--seeds, confirm_seeds), n, mean and
    the 95% t-interval over its seeds."""
    if metric not in trials:
        return [], []
    done = trials[(trials["status"] == "done") & trials[metric].notna()]
    is_confirm = done["confirm_of"].notna() if "confirm_of" in done else pd.Series(False, index=done.index)

    def rows(df, n):
        out = []
        for _, r in df.sort_values(metric, ascending=mode == "min", kind="stable").head(n).iterrows():
            row = dict(trial=r["trial"], variant=r["variant"], **{k: r.get(k) for k in searched}, **{metric: r[metric]})
            if "confirm_of" in r and pd.notna(r["confirm_of"]):
                row["confirm_of"] = r["confirm_of"]
            values = seed_values(r, metric)
            if values:
                ci = mean_ci(values)
                row.update(n=ci["n"], mean=ci["mean"], ci_low=ci["ci_low"], ci_high=ci["ci_high"])
            out.append(row)
        return out

    return _records(pd.DataFrame(rows(done[~is_confirm], top))), _records(pd.DataFrame(rows(done[is_confirm], None)))


# -----------------------------------------------------------------------------
# One study, all of the above. The dict is what results.json holds and what the
# figures and the page are drawn from.


def analyse_study(study):
    """The common analysis every study gets, then what each of its report views adds."""
    from reports.sections import study_sections  # here: sections.py imports this module

    t, metric, mode = study.trials, study.metric, study.mode
    counts = t["status"].value_counts().to_dict()
    done = t[(t["status"] == "done") & t[metric].notna()] if metric in t else t.iloc[:0]
    out = dict(
        study=study.name,
        title=study.title,
        family=study.family,
        views=study.views,
        profile=study.meta.get("profile"),
        metric=metric,
        mode=mode,
        baseline=study.baseline,
        counts=dict(
            total=len(t),
            done=int(counts.get("done", 0)),
            failed=int(counts.get("failed", 0)),
            stopped=int(counts.get("stopped", 0)),
            other=int(len(t) - sum(counts.get(k, 0) for k in ("done", "failed", "stopped"))),
        ),
        test="Each variant against the baseline, two-sided, Holm-adjusted across variants: a paired t-test on the "
        "differences between trials that share a data_seed (the same batches in the same order, the same val tokens) "
        "where two or more such pairs form, a trial without a partner left out (n_pairs); Welch's unequal-variance "
        f"t-test on all finished trials where they do not (the test column says which). {CONFIDENCE:.0%} t-intervals "
        f"(not adjusted). sd: seed-to-seed sd of the arm; sd_diff: sd of its paired differences. 'within noise': "
        f"p >= {ALPHA:.2f}; 'within noise after Holm correction': p < {ALPHA:.2f} but Holm-adjusted p >= {ALPHA:.2f}.",
        groups=_records(summarise_groups(t, metric, study.baseline)),
        comparisons=_records(compare_to_baseline(t, study.baseline, metric, mode)),
    )
    judged_by_a_view = any(s.judges_threshold for s in study_sections(study)[0].values())
    if study.threshold is not None and study.baseline and not judged_by_a_view:
        out["threshold"] = dict(
            threshold=study.threshold,
            metric=metric,
            mode=mode,
            rule=f"an arm meets the threshold when its {metric} is {percent(study.threshold)} "
            f"{'lower' if mode == 'min' else 'higher'} than {study.baseline}'s with the whole {CONFIDENCE:.0%} "
            f"interval past that line (ratio of geometric means over seeds: exp of the Welch interval of the "
            f"log difference)",
            arms=threshold_table(t, study.baseline, metric, mode, study.threshold),
        )
    # best trial and the Pareto fronts (metric against size and compute)
    if len(done):
        best = done.loc[done[metric].idxmin() if mode == "min" else done[metric].idxmax()]
        out["best"] = {"trial": best["trial"], "variant": best["variant"], metric: float(best[metric])}
    sign = 1 if mode == "min" else -1
    out["pareto"] = {}
    for x in ("params_total", "params_non_embedding", "train_flops"):
        if x in done and done[x].notna().any():
            mask = pareto_front(done[x], sign * done[metric])
            out["pareto"][x] = done.loc[mask].sort_values(x)["trial"].tolist()
    out["fits"] = _fits(t, metric)
    out["probes"] = probe_table(t)
    audit = pruning_audit(study)
    if audit:
        out["pruning_audit"] = audit
    sections, view_warnings = study_sections(study)
    for section in sections.values():
        out.update(section.analyse(study) if section.analyse else {})
    out["failures"] = [
        {
            "trial": r["trial"],
            "variant": r["variant"],
            "status": r["status"],
            "error": r["error"] if isinstance(r["error"], str) and r["error"] else None,
        }
        for r in t[t["status"] != "done"][["trial", "variant", "status", "error"]].to_dict(orient="records")
    ]
    out["warnings"] = list(study.warnings) + view_warnings
    return out
