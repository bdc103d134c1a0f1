"""
How many seeds a comparison needs: the power of a two-sided t-test (noncentral t), the fewest seeds per arm that
reach a target power, and the seed-to-seed noise an earlier run of the study (a pilot) shows. Files and plain
numbers in, plain numbers out (no torch, no ray): study.run's planner (`--mde`) calls it before a study runs.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from reports.analyse import group_keys, sorted_variants

MAX_SEEDS = 100_000  # past this the difference is too small for seeds to find: say so instead of searching on


def t_power(n: int, mde: float, sd: float, alpha: float, paired: bool) -> float:
    """Power of the two-sided t-test with n seeds per arm against a true difference mde, where sd is the noise:
    paired, of the n per-seed differences (df n-1, noncentrality mde/sd x sqrt(n)), or two-sample, of two groups of
    n with sd each (df 2n-2, noncentrality mde / (sd x sqrt(2/n)))."""
    mde = abs(mde)  # two-sided: the sign of the difference does not matter
    df, ncp = (n - 1, mde / sd * math.sqrt(n)) if paired else (2 * n - 2, mde / (sd * math.sqrt(2 / n)))
    crit = stats.t.ppf(1 - alpha / 2, df)
    wrong_side = stats.nct.cdf(-crit, df, ncp)  # scipy gives NaN where this tail underflows (below 1e-20 or so)
    return float(stats.nct.sf(crit, df, ncp) + (wrong_side if math.isfinite(wrong_side) else 0.0))


def seeds_needed(mde: float, sd: float, alpha: float = 0.05, power: float = 0.8, paired: bool = True) -> int | None:
    """The fewest seeds per arm (at least 2: one has no variance) whose t-test reaches `power`; None past MAX_SEEDS.
    Power grows with n, so a bisection finds it in ~17 evaluations."""
    if sd == 0:
        return 2  # noiseless arms: any difference shows at the first two seeds

    def enough(n):
        return t_power(n, mde, sd, alpha, paired) >= power

    if enough(2):
        return 2
    if not enough(MAX_SEEDS):
        return None
    lo, hi = 2, MAX_SEEDS  # not enough at lo, enough at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


# -----------------------------------------------------------------------------
# The noise a pilot shows


@dataclass(frozen=True)
class Noise:
    """The seed-to-seed sd of a pilot's metric, and what it rests on."""

    sd: float
    paired: bool  # True: the sd of per-seed differences arm - baseline; False: the pooled sd within arms
    n: int  # the pairs (paired) or the fewest seeds of an arm (pooled) behind it
    arm: str | None = None  # paired: the arm whose differences vary most (its sd is the one used)
    pair_by: str | None = None  # paired: the column the seeds pair on (seed, or data_seed)


def pilot_noise(trials: pd.DataFrame, baseline: str | None, metric: str) -> tuple[Noise | None, str]:
    """(noise, "") from a pilot's trials, or (None, why not). Arms pair up where every arm shares at least two seeds
    with the baseline (data_seed when the table has it: the data order is what the arms share); then the sd is that
    of the per-seed differences arm - baseline, the largest over the arms, as the noisiest comparison sets the
    seeds. Otherwise it is the pooled within-arm sd, for a two-sample test. Either needs two finished seeds an arm."""
    if metric not in trials:
        return None, f"its trials have no {metric} column"
    values = pd.to_numeric(trials[metric], errors="coerce")
    done = trials[(trials["status"] == "done") & np.isfinite(values)].assign(**{metric: values})
    if done.empty:
        return None, f"it has no finished trial with a {metric}"
    keys = group_keys(done)
    counts = done.groupby(keys, dropna=False).size()
    if counts.min() < 2:
        arm = counts.idxmin()
        return None, f"arm {_arm_text(arm)} has {counts.min()} finished seed (two or more an arm are needed)"
    paired = _paired_noise(done, keys, baseline, metric)
    if paired:
        return paired, ""
    groups = done.groupby(keys, dropna=False)[metric]
    dof = int((counts - 1).sum())
    pooled = math.sqrt(float(((counts - 1) * groups.var(ddof=1)).sum()) / dof)
    return Noise(sd=pooled, paired=False, n=int(counts.min())), ""


def _paired_noise(done: pd.DataFrame, keys: list, baseline: str | None, metric: str) -> Noise | None:
    pair_by = "data_seed" if "data_seed" in done else "seed"
    if baseline is None or pair_by not in done:
        return None
    strata = done.groupby(keys[1:], dropna=False) if len(keys) > 1 else [((), done)]
    found = []  # (sd, arm, pairs)
    for _, g in strata:
        arms = {v: g[g["variant"].astype(str) == v] for v in sorted_variants(g["variant"], baseline)}
        if baseline not in arms or len(arms) < 2 or any(a[pair_by].duplicated().any() for a in arms.values()):
            return None  # a stratum without the baseline, or seeds that do not pair one to one
        base = arms.pop(baseline).set_index(pair_by)[metric]
        for variant, arm in arms.items():
            diff = (arm.set_index(pair_by)[metric] - base).dropna()  # aligned on the pairing key
            if len(diff) < 2:
                return None
            found.append((float(diff.std(ddof=1)), variant, len(diff)))
    if not found:
        return None
    sd, arm, pairs = max(found)
    return Noise(sd=sd, paired=True, n=min(f[2] for f in found), arm=arm, pair_by=pair_by)


def _arm_text(key) -> str:
    return ", ".join(map(str, key)) if isinstance(key, tuple) else str(key)


def read_pilot(folder: Path) -> tuple[pd.DataFrame, dict] | None:
    """An earlier run's trials table and study.json, or None where the folder holds no trials."""
    from reports.collect import normalise_trials, read_json, read_trials_table

    warnings = []
    if not Path(folder).is_dir():
        return None
    table = read_trials_table(Path(folder), warnings)
    if table is None or table.empty:
        return None
    meta = read_json(Path(folder) / "study.json", warnings)
    meta = meta if isinstance(meta, dict) else {}
    trials = normalise_trials(table, str(meta.get("study") or Path(folder).name))
    if "target_params" in trials and ("budget" not in trials or trials["budget"].isna().all()):
        trials["budget"] = trials["target_params"]  # a solved budget's trials keep it there: arms pair within it
    return trials, meta
