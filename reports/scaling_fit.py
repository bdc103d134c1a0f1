"""Compute-matched scaling fits: L(N, D) = E + A / N^alpha + B / D^beta per arm, as Besiroglu et al. (2024,
"Chinchilla Scaling: A replication attempt") refit Hoffmann et al.'s approach 3:

    log L = LSE(a - alpha log N, b - beta log D, e),   A = exp(a), B = exp(b), E = exp(e)

minimised with the Huber loss (delta 1e-3) of the residuals in log L, by L-BFGS-B from the best points of
Chinchilla's grid of 4,500 starting points; the best minimum is kept. Bootstrap resamples of the design's cells
(one compute budget x one size, both arms together, so a paired design stays paired) give the intervals; each
resample's fit starts from the full fit's minimum (a grid search per resample costs ~10x as much).

The compute-optimal size for C = 6 N D (Hoffmann et al., eq. 4): N*(C) = G (C / 6)^(beta / (alpha + beta)),
G = (alpha A / (beta B))^(1 / (alpha + beta)).
"""

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

HUBER_DELTA = 1e-3
# Chinchilla's starting points (Hoffmann et al. 2022, D.2; Besiroglu et al. 2024): a, b, e, alpha, beta
GRID = np.array(
    list(
        itertools.product(
            np.arange(0, 30, 5),
            np.arange(0, 30, 5),
            np.arange(-1, 1.5, 0.5),
            np.arange(0, 2.5, 0.5),
            np.arange(0, 2.5, 0.5),
        )
    ),
    dtype=float,
)
STARTS = 8  # L-BFGS-B runs from this many of the grid's best points (by the objective): the grid's other minima
# The exponents are kept in (0, 4]: N*(C) needs both positive, and with a few points a free exponent can run off
# with its coefficient (a -> inf, alpha -> inf) along a flat valley.
BOUNDS = [(None, None), (None, None), (None, None), (1e-2, 4.0), (1e-2, 4.0)]
CONFIDENCE = 0.95
# scipy's defaults stop once f falls by less than 2.2e-9 absolute (f < 1) or the gradient is under 1e-5: a Huber
# sum at delta 1e-3 is ~1e-5 and its gradient ~1e-4, so they stop far from the minimum. These reach it (the cpu
# run's fits agree with 1e-15 / 1e-12 to 4 digits) at a seventh of the cost.
OPTIONS = dict(ftol=1e-12, gtol=1e-9, maxiter=1000)


@dataclass(frozen=True)
class Fit:
    a: float
    b: float
    e: float
    alpha: float
    beta: float
    objective: float = math.nan  # the Huber loss it reached

    @property
    def E(self) -> float:
        return math.exp(self.e)

    @property
    def A(self) -> float:
        return math.exp(self.a)

    @property
    def B(self) -> float:
        return math.exp(self.b)

    def params(self) -> dict:
        return dict(E=self.E, A=self.A, B=self.B, alpha=self.alpha, beta=self.beta)

    def loss(self, N, D):
        N, D = np.asarray(N, float), np.asarray(D, float)
        with np.errstate(all="ignore"):  # a resample's degenerate fit gives inf or nan, which interval() drops
            return self.E + self.A * N**-self.alpha + self.B * D**-self.beta

    def optimal_size(self, C):
        """N*(C) for C = 6 N D: the minimum of loss(N, C / (6 N)) over N."""
        s = self.alpha + self.beta
        with np.errstate(all="ignore"):
            G = (self.alpha * self.A / (self.beta * self.B)) ** (1 / s)
            return G * (np.asarray(C, float) / 6) ** (self.beta / s)

    def optimal_loss(self, C):
        N = self.optimal_size(C)
        with np.errstate(all="ignore"):
            return self.loss(N, np.asarray(C, float) / (6 * N))


def _huber(r, delta):
    small = np.abs(r) <= delta
    return np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))


def _objective(theta, logN, logD, logL, delta):
    """Sum of Huber losses of the log-L residuals, and its gradient in (a, b, e, alpha, beta). Plain numpy (no
    scipy.special): it runs thousands of times per bootstrap, on a handful of points."""
    a, b, e, alpha, beta = theta
    t1, t2 = a - alpha * logN, b - beta * logD
    m = np.maximum(np.maximum(t1, t2), e)
    x1, x2, x3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
    total = x1 + x2 + x3
    r = m + np.log(total) - logL
    g = np.clip(r, -delta, delta) / total  # dHuber/dr x dLSE/dterm (the softmax weights' common denominator)
    w1, w2, w3 = g * x1, g * x2, g * x3
    loss = np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)).sum()
    grad = np.array([w1.sum(), w2.sum(), w3.sum(), -(w1 @ logN), -(w2 @ logD)])
    return float(loss), grad


def _grid_objective(logN, logD, logL, delta):
    """The objective at every grid point at once (numpy broadcasting): which starts are worth an L-BFGS-B run."""
    a, b, e, alpha, beta = (GRID[:, i : i + 1] for i in range(5))
    terms = np.stack([a - alpha * logN, b - beta * logD, np.broadcast_to(e, (len(GRID), len(logN)))], axis=2)
    r = logsumexp(terms, axis=2) - logL
    return _huber(r, delta).sum(axis=1)


def fit(N, D, L, *, delta: float = HUBER_DELTA, starts: int = STARTS, extra=()) -> Fit:
    """The best L-BFGS-B minimum from the `starts` best grid points (and any `extra` starting Fits)."""
    logN, logD, logL = (np.log(np.asarray(x, float)) for x in (N, D, L))
    best_grid = GRID[np.argsort(_grid_objective(logN, logD, logL, delta))[:starts]]
    x0s = [*best_grid, *(np.array([f.a, f.b, f.e, f.alpha, f.beta]) for f in extra)]
    best = None
    for x0 in x0s:
        x0 = np.clip(x0, [-np.inf, -np.inf, -np.inf, 1e-2, 1e-2], [np.inf, np.inf, np.inf, 4.0, 4.0])
        res = minimize(
            _objective, x0, args=(logN, logD, logL, delta), jac=True, method="L-BFGS-B", bounds=BOUNDS, options=OPTIONS
        )
        if best is None or res.fun < best.fun:
            best = res
    return Fit(*map(float, best.x), objective=float(best.fun))


def resample_cells(cells, n_boot: int, seed: int) -> list[np.ndarray]:
    """n_boot draws, with replacement, of as many design cells as there are (seeded: the same draws every time)."""
    rng = np.random.default_rng(seed)
    cells = np.asarray(cells)
    return [rng.choice(cells, size=len(cells), replace=True) for _ in range(n_boot)]


def fit_rows(rows, drawn=None, **kw) -> Fit:
    """Fit rows {N, D, L, cell}; with `drawn` cells, each row as often as its cell was drawn."""
    if drawn is not None:
        counts = {c: int(k) for c, k in zip(*np.unique(drawn, return_counts=True))}
        rows = [r for r in rows for _ in range(counts.get(r["cell"], 0))]
    return fit([r["N"] for r in rows], [r["D"] for r in rows], [r["L"] for r in rows], **kw)


def interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    if not len(v):
        return math.nan, math.nan
    q = (1 - confidence) / 2
    return float(np.quantile(v, q)), float(np.quantile(v, 1 - q))


def held_out(rows, boots_cells, *, confidence: float = CONFIDENCE, seed: int = 0) -> dict | None:
    """Fit on every budget but the largest, predict each trial of the largest with a bootstrap prediction interval
    (refits on resampled held-in cells, each prediction times exp of a resampled held-in residual: the fit's
    uncertainty and one trial's noise). The verdict is on the held-out budget's best size (lowest measured loss)."""
    top = max(r["C"] for r in rows)
    inside_rows = [r for r in rows if r["C"] < top]
    out_rows = [r for r in rows if r["C"] == top]
    if len({r["C"] for r in inside_rows}) < 2 or not out_rows:
        return None
    point = fit_rows(inside_rows)
    resid = np.log([r["L"] for r in inside_rows]) - np.log(
        point.loss([r["N"] for r in inside_rows], [r["D"] for r in inside_rows])
    )
    held_cells = {r["cell"] for r in inside_rows}
    rng = np.random.default_rng(seed)
    preds = []
    for drawn in boots_cells:
        drawn = np.array([c for c in drawn if c in held_cells])
        if len(np.unique(drawn)) < 5:  # fewer distinct points than parameters: no fit to speak of
            continue
        f = fit_rows(inside_rows, drawn, starts=0, extra=(point,))
        pred = f.loss([r["N"] for r in out_rows], [r["D"] for r in out_rows])
        preds.append(pred * np.exp(rng.choice(resid, size=len(out_rows))))
    preds = np.array(preds)
    trials = []
    for i, r in enumerate(out_rows):
        lo, hi = interval(preds[:, i], confidence) if len(preds) else (math.nan, math.nan)
        trials.append(
            dict(N=r["N"], D=r["D"], measured=r["L"], predicted=float(point.loss(r["N"], r["D"])), lo=lo, hi=hi)
        )
        trials[-1]["inside"] = bool(lo <= r["L"] <= hi)
    best = min(trials, key=lambda t: t["measured"])
    return dict(
        budget=top,
        fitted_on=sorted({r["C"] for r in inside_rows}),
        n_fitted=len(inside_rows),
        n_boot=len(preds),
        trials=trials,
        best=best,
        inside=sum(t["inside"] for t in trials),
        extrapolates=best["inside"],
        fit=point.params(),
    )


def crossing(C, diff) -> float | None:
    """The first C where diff changes sign (log-linear between grid points), or None."""
    C, diff = np.asarray(C, float), np.asarray(diff, float)
    s = np.sign(diff)
    idx = np.nonzero(s[:-1] * s[1:] < 0)[0]
    if not len(idx):
        zero = np.nonzero(diff == 0)[0]
        return float(C[zero[0]]) if len(zero) else None
    i = idx[0]
    t = diff[i] / (diff[i] - diff[i + 1])
    return float(math.exp(math.log(C[i]) + t * (math.log(C[i + 1]) - math.log(C[i]))))


def crossover(
    base: Fit,
    variant: Fit,
    boots_base,
    boots_variant,
    c_low: float,
    c_high: float,
    *,
    c_next_high: float,
    confidence: float = CONFIDENCE,
    points: int = 400,
) -> dict:
    """Where the variant's compute-optimal loss L*(C) crosses the baseline's, between c_low and c_high, with a
    bootstrap interval over the resamples that cross; and the next budget (in [c_low, c_next_high]) whose
    measurement would narrow it most: the one where the resamples disagree most on which arm is ahead (the share
    with the variant ahead nearest 1/2), or, where they all agree, where the spread of the difference is largest."""
    grid = np.logspace(math.log10(c_low), math.log10(c_high), points)
    diff = variant.optimal_loss(grid) - base.optimal_loss(grid)
    at = crossing(grid, diff)
    crossings = [crossing(grid, v.optimal_loss(grid) - b.optimal_loss(grid)) for b, v in zip(boots_base, boots_variant)]
    found = [c for c in crossings if c is not None]
    lo, hi = interval(found, confidence) if found else (math.nan, math.nan)
    nxt = np.logspace(math.log10(c_low), math.log10(c_next_high), points)
    d = np.array([v.optimal_loss(nxt) - b.optimal_loss(nxt) for b, v in zip(boots_base, boots_variant)])
    ahead = (d < 0).mean(axis=0)
    undecided = np.minimum(ahead, 1 - ahead)
    pick = int(np.argmax(undecided)) if undecided.max() > 0 else int(np.argmax(d.std(axis=0)))
    return dict(
        c_low=c_low,
        c_high=c_high,
        at=at,
        n_star=float(variant.optimal_size(at)) if at else None,
        ci=[lo, hi],
        n_star_ci=list(
            interval([v.optimal_size(c) for c, v in zip(crossings, boots_variant) if c is not None], confidence)
        )
        if found
        else [math.nan, math.nan],
        share_crossing=len(found) / max(1, len(crossings)),
        variant_ahead_at_high=bool(diff[-1] < 0),
        variant_ahead_at_low=bool(diff[0] < 0),
        next_budget=float(nxt[pick]),
        next_share_ahead=float(ahead[pick]),
        next_range=[c_low, c_next_high],
    )


# -----------------------------------------------------------------------------
# The report view (reports/sections.py "scaling_flops"): a compute-matched scaling study's fits, in words and numbers

N_BOOT = 200
EXTRAPOLATE = 100  # the crossover is sought up to this many times the largest budget
NEXT_RANGE = 10  # the next budget is sought up to this many times the largest budget
WIDE = 10  # a parameter's interval is wide when its ends are more than this factor apart


def _rows(trials, metric) -> dict:
    """Finished trials per arm: N (params), D (tokens trained), L (the metric), C (the planned budget), cell."""
    need = {"compute", "tokens_per_param", "params_total", "tokens_trained", metric}
    if not need <= set(trials.columns):
        return {}
    done = trials[(trials["status"] == "done") & trials[list(need)].notna().all(axis=1)]
    out = {}
    for _, r in done.iterrows():
        out.setdefault(r["variant"], []).append(
            dict(
                trial=r["trial"],
                N=float(r["params_total"]),
                D=float(r["tokens_trained"]),
                L=float(r[metric]),
                C=float(r["compute"]),
                cell=f"{float(r['compute']):g}/{float(r['tokens_per_param']):g}",
            )
        )
    return out


def _param_table(point: Fit, boots: list) -> dict:
    out = {}
    for name, value in point.params().items():
        lo, hi = interval([b.params()[name] for b in boots])
        out[name] = dict(value=value, ci=[lo, hi], wide=bool(not lo > 0 or hi / lo > WIDE))
    for name in ("alpha", "beta"):
        out[name]["at_bound"] = bool(min(abs(point.params()[name] - x) for x in BOUNDS[3]) < 1e-6)
    return out


def analyse_flops(trials, metric: str, baseline: str | None, *, n_boot: int | None = None, seed: int = 0) -> dict:
    """Fits, N*(C), held-out check and crossover per arm of a match=flops study; {} for any other study."""
    n_boot = N_BOOT if n_boot is None else n_boot
    rows = _rows(trials, metric)
    if not rows:
        return {}
    arms = sorted(rows, key=lambda a: (a != baseline, a))
    budgets = sorted({r["C"] for rs in rows.values() for r in rs})
    cells = sorted({r["cell"] for rs in rows.values() for r in rs})
    draws = resample_cells(cells, n_boot, seed)
    out = dict(metric=metric, budgets=budgets, n_boot=n_boot, confidence=CONFIDENCE, arms={}, crossovers=[])
    fits = {}
    for arm in arms:
        rs = rows[arm]
        entry = dict(points=rs, n=len(rs))
        if len({r["cell"] for r in rs}) < 5:  # 5 parameters
            entry["note"] = f"{len(rs)} trials: too few for the 5-parameter fit (5 design points at least)"
            out["arms"][arm] = entry
            continue
        point = fit_rows(rs)
        boots = [
            fit_rows(rs, d, starts=0, extra=(point,)) if len(set(d) & {r["cell"] for r in rs}) >= 5 else None
            for d in draws
        ]
        fits[arm] = (point, boots)
        ok = [b for b in boots if b is not None]
        sizes = [*budgets, budgets[-1] * NEXT_RANGE]
        entry.update(
            fit=dict(a=point.a, b=point.b, e=point.e, alpha=point.alpha, beta=point.beta, objective=point.objective),
            params=_param_table(point, ok),
            n_boot=len(ok),
            optimal=[
                dict(
                    C=c,
                    N=float(point.optimal_size(c)),
                    N_ci=list(interval([b.optimal_size(c) for b in ok])),
                    L=float(point.optimal_loss(c)),
                    L_ci=list(interval([b.optimal_loss(c) for b in ok])),
                    measured=c in budgets,
                )
                for c in sizes
            ],
            held_out=held_out(rs, draws, seed=seed),
            curve=[  # L*(C) from half the smallest budget to the crossover's range, for the figure's band
                dict(C=float(c), L=float(point.optimal_loss(c)), ci=list(interval([b.optimal_loss(c) for b in ok])))
                for c in np.logspace(math.log10(budgets[0] / 2), math.log10(budgets[-1] * EXTRAPOLATE), 40)
            ],
        )
        out["arms"][arm] = entry
    if baseline in fits:
        pb, bb = fits[baseline]
        for arm in arms:
            if arm == baseline or arm not in fits:
                continue
            pv, bv = fits[arm]
            pairs = [(b, v) for b, v in zip(bb, bv) if b is not None and v is not None]
            x = crossover(
                pb,
                pv,
                [p[0] for p in pairs],
                [p[1] for p in pairs],
                budgets[0],
                budgets[-1] * EXTRAPOLATE,
                c_next_high=budgets[-1] * NEXT_RANGE,
            )
            out["crossovers"].append(dict(variant=arm, baseline=baseline, **x))
    out["sentences"] = sentences(out)
    return out


def _n(x) -> str:
    return f"{x:,.0f}" if x < 1e7 else f"{x:.3g}"


def sentences(res: dict) -> dict:
    """The view's conclusions in words: held-out check per arm, crossover per variant, identification."""
    out = dict(held_out={}, crossover={}, identification={})
    for arm, e in res["arms"].items():
        if "params" in e:
            wide = [k for k, p in e["params"].items() if p["wide"]]
            bound = [k for k in ("alpha", "beta") if e["params"][k].get("at_bound")]
            out["identification"][arm] = (
                f"{e['n']} trials for 5 parameters: the fit is weakly identified; the intervals of "
                f"{', '.join(wide)} span more than a factor {WIDE}"
                if wide
                else f"{e['n']} trials for 5 parameters; every interval within a factor {WIDE}"
            ) + (f"; {', '.join(bound)} at the bound of (0.01, 4]" if bound else "")
        h = e.get("held_out")
        if h:
            b = h["best"]
            verdict = "the fit extrapolates" if h["extrapolates"] else "the fit did not predict the held-out budget"
            out["held_out"][arm] = (
                f"{verdict}: fitted on the {h['n_fitted']} trials at C = "
                f"{', '.join(f'{c:.3g}' for c in h['fitted_on'])}, it predicted {b['predicted']:.4f} "
                f"[{b['lo']:.4f}, {b['hi']:.4f}] for the best size at C = {h['budget']:.3g} (N = {_n(b['N'])}), which "
                f"measured {b['measured']:.4f}; {h['inside']} of {len(h['trials'])} sizes inside their intervals"
            )
    for x in res["crossovers"]:
        v, base = x["variant"], x["baseline"]
        if x["at"]:
            lo, hi = x["ci"]
            nlo, nhi = x["n_star_ci"]
            before = v if x["variant_ahead_at_low"] else base
            text = (
                f"{v} crosses {base} at C = {x['at']:.3g} FLOPs ({lo:.3g} to {hi:.3g} over the "
                f"{x['share_crossing']:.0%} of resamples that cross), at N* = {_n(x['n_star'])} ({_n(nlo)} to "
                f"{_n(nhi)}); below it {before} is ahead"
            )
        else:
            ahead = v if x["variant_ahead_at_low"] else base
            lo, hi = x["ci"]
            text = (
                f"no crossover between {x['c_low']:.3g} and {x['c_high']:.3g} FLOPs (the smallest budget to "
                f"{EXTRAPOLATE}x the largest): {ahead} is ahead throughout; {x['share_crossing']:.0%} of resamples "
                f"cross in that range"
            ) + (f", at {lo:.3g} to {hi:.3g}" if x["share_crossing"] else "")
        lo, hi = x["next_range"]
        share = x["next_share_ahead"]
        why = (
            f"where the resamples disagree most on which arm is ahead: {share:.0%} put {v} ahead there"
            if 0 < share < 1
            else f"every resample puts {v if share == 1 else base} ahead throughout, and the spread of the "
            f"difference is largest there"
        )
        out["crossover"][v] = text + (
            f". The next budget that would narrow this most: C = {x['next_budget']:.2g} (sought in [{lo:.3g}, "
            f"{hi:.3g}]; {why})"
        )
    return out


def scaling_flops_analysis(study) -> dict:
    res = analyse_flops(study.trials, study.metric, study.baseline)
    return {"scaling_flops": res} if res else {}
