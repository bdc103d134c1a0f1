"""Sequential seeding (`--seeds auto --mde D [--max-seeds K]`): which arms need another seed.

A study runs 2 seeds per arm, then adds one seed (the next data_seed) per round, only to the arms whose comparison
with the baseline is still undecided, until every arm is decided or has K seeds. This module is the decision alone:
the trials table in, one row per arm out (no Ray, no torch); study.sequential plans the rounds, study.service runs
them, and the report shows each arm's seeds and why it stopped.

At each look an arm's interval is the paired t interval of its per-data_seed differences arm - baseline. The arm is
- decided, "differs", where the interval excludes 0 (better or worse, by the study's mode);
- decided, "equivalent", where it lies inside (-D, D): no difference of D or more;
- capped where neither holds and it has K pairs;
- undecided otherwise (the interval holds 0 and reaches past +/-D): it gets the next seed.

The error rate across looks: a Bonferroni split of alpha. An arm is looked at with n = 2, 3, ..., K pairs, at most
K - 1 looks, and each look's interval has confidence 1 - alpha / (K - 1). Whatever the stopping, a null arm is
declared different only if some look's interval misses 0, which by the union bound has probability at most
(K - 1) x alpha / (K - 1) = alpha. The same bound holds for "equivalent" where the true difference is D or more.
This is simple and valid but conservative (the looks are correlated, so the real rate is below alpha), and early
looks are wide: with 2 pairs the t has 1 degree of freedom, so only a difference many sds of the per-seed
differences across is decided in the first round. The split is per arm; the report's Holm step across arms applies
on top of it as before.
"""

import math

import numpy as np
import pandas as pd
from scipy import stats

from reports.analyse import arms_vs_baseline, pair_up, seed_keys

MIN_SEEDS = 2  # the first round: one pair has no variance
DEFAULT_MAX_SEEDS = 10


def look_alpha(alpha: float, max_seeds: int) -> float:
    """The significance level of each look: alpha split evenly over the at most max_seeds - 1 looks (n = 2..K)."""
    if max_seeds < MIN_SEEDS:
        raise ValueError(f"max_seeds={max_seeds}: must be >= {MIN_SEEDS}")
    return alpha / (max_seeds - 1)


def intervals(mean, sd, n, alpha: float, max_seeds: int):
    """(low, high): each look's interval for paired differences with this mean, sd (ddof 1) and count n >= 2, at
    confidence 1 - look_alpha. Arrays broadcast (the simulation passes thousands of studies at once)."""
    mean, sd, n = (np.asarray(v, dtype=float) for v in (mean, sd, n))
    half = stats.t.ppf(1 - look_alpha(alpha, max_seeds) / 2, n - 1) * sd / np.sqrt(n)
    return mean - half, mean + half


def classify(low, high, n, mde: float, max_seeds: int):
    """Each look's outcome from its interval: "differs", "equivalent", "capped" or "undecided" (arrays of str)."""
    low, high, n = (np.asarray(v, dtype=float) for v in (low, high, n))
    mde = abs(mde)
    differs = (low > 0) | (high < 0)
    equivalent = ~differs & (low > -mde) & (high < mde)
    capped = ~differs & ~equivalent & (n >= max_seeds)
    return np.select([differs, equivalent, capped], ["differs", "equivalent", "capped"], "undecided")


STATUS = {"differs": "decided", "equivalent": "decided", "capped": "capped", "undecided": "undecided"}


def why(outcome: str, diff: float, low: float, high: float, n: int, mde: float, max_seeds: int, mode: str) -> str:
    """One line saying why an arm stopped, or why it goes on."""
    ci = f"[{low:+.4g}, {high:+.4g}]"
    if outcome == "differs":
        better = diff < 0 if mode == "min" else diff > 0
        return f"{'better' if better else 'worse'}: the interval {ci} excludes 0 at {n} pairs"
    if outcome == "equivalent":
        return f"no difference of D = {mde:g} or more: the interval {ci} lies inside +/-{mde:g} at {n} pairs"
    if outcome == "capped":
        return f"undecided at the cap of {max_seeds} seeds: the interval {ci} holds 0 and reaches past +/-{mde:g}"
    if n < MIN_SEEDS:
        return f"{n} pair(s) with the baseline: needs {MIN_SEEDS} for an interval"
    return f"the interval {ci} holds 0 and reaches past +/-{mde:g} at {n} pairs: one more seed"


def decide(
    trials: pd.DataFrame,
    baseline: str,
    mde: float,
    alpha: float = 0.05,
    max_seeds: int = DEFAULT_MAX_SEEDS,
    metric: str = "val_bpb",
    mode: str = "min",
) -> pd.DataFrame:
    """One row per arm (and budget, where the study has several): variant, n_pairs, look (n_pairs - 1), diff,
    sd_diff, ci_low, ci_high, alpha_look, outcome, status (decided / undecided / capped) and why. Pairs are the
    arm's finished trials with a baseline partner on the same data_seed (reports.analyse.pair_up)."""
    if not mde or not math.isfinite(mde):
        raise ValueError(f"mde={mde}: sequential seeding needs a difference D > 0")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha}: must lie in (0, 1)")
    a_look = look_alpha(alpha, max_seeds)
    keys = seed_keys(trials)
    rows = []
    for stratum, variant, base, arm in arms_vs_baseline(trials, baseline, metric):
        pairs = pair_up(base, arm, keys)
        d = (pairs[1] - pairs[0]) if pairs is not None else np.array([])
        n = len(d)
        diff = float(d.mean()) if n else math.nan
        sd = float(d.std(ddof=1)) if n >= 2 else math.nan
        if n >= MIN_SEEDS:
            low, high = (float(v) for v in intervals(diff, sd, n, alpha, max_seeds))
            outcome = str(classify(low, high, n, mde, max_seeds))
        else:
            low = high = math.nan
            outcome = "undecided"  # a first round not yet run (or failed): it still owes its seeds
        rows.append(
            dict(
                **stratum,
                variant=variant,
                n_pairs=n,
                look=max(n - 1, 0),
                diff=diff,
                sd_diff=sd,
                ci_low=low,
                ci_high=high,
                alpha_look=a_look,
                outcome=outcome,
                status=STATUS[outcome],
                why=why(outcome, diff, low, high, n, abs(mde), max_seeds, mode),
            )
        )
    cols = ["variant", "n_pairs", "look", "diff", "sd_diff", "ci_low", "ci_high", "alpha_look", "outcome", "status"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols + ["why"])


def undecided_arms(decisions: pd.DataFrame) -> list[str]:
    """The variants that get the next round's seed."""
    return sorted(set(decisions.loc[decisions["status"] == "undecided", "variant"].astype(str)))


# -----------------------------------------------------------------------------
# Whole studies at once, for the simulation: normal paired differences, all looks of every study vectorised


def simulate(
    effect: float,
    sd: float,
    mde: float,
    alpha: float = 0.05,
    max_seeds: int = DEFAULT_MAX_SEEDS,
    studies: int = 2000,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(outcome, seeds) of one arm in each of `studies` simulated studies whose per-seed differences are
    normal(effect, sd): the arm runs 2 seeds, then one more per round while classify says "undecided"."""
    rng = rng or np.random.default_rng(0)
    d = rng.normal(effect, sd, size=(studies, max_seeds))
    outcome = np.full(studies, "undecided", dtype=object)
    seeds = np.zeros(studies, dtype=int)
    for n in range(MIN_SEEDS, max_seeds + 1):
        going = outcome == "undecided"
        if not going.any():
            break
        x = d[going, :n]
        low, high = intervals(x.mean(axis=1), x.std(axis=1, ddof=1), n, alpha, max_seeds)
        outcome[going] = classify(low, high, np.full(len(x), n), mde, max_seeds)
        seeds[going] = n
    return outcome.astype(str), seeds
