"""The seed planner: `python -m study.run STUDY --dry-run --mde D` says how many seeds per arm detect a true difference
D (in the study's metric) with the asked power, and what those trials cost. The noise comes from an earlier run of
the same study, a pilot: --pilot DIR, else the study's own results folder. The statistics are reports/power.py's.

The significance level per comparison is alpha / m, with m the study's comparisons (its arms besides the
baseline): Holm's first step, the strictest one, so the seeds suffice for whichever comparison Holm tests first.
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from study.errors import UsageError


@dataclass(frozen=True)
class SeedPlan:
    line: str  # the `seeds needed:` line the dry run prints
    record: dict  # what study.json's plan keeps of it ("planner")


def planned_arms(plan) -> pd.DataFrame:
    """One row per config the plan compares (its variant, and its budget where a variant runs at several), with its
    planned tokens and FLOPs per token: the seeds of a config differ in their seed only."""
    from reports.analyse import group_keys
    from trainables.model import flops_per_token

    spec = plan.spec
    rows = pd.DataFrame(
        [
            dict(
                variant=spec.arm({**t["config"], **t["gpt"].to_dict()}),
                budget=t["config"].get("budget") or t["config"].get("target_params"),  # as reports.collect reads it
                tokens=t["tokens"],
                flops_per_token=flops_per_token(t["gpt"]),
            )
            for t in plan.trials
        ]
    )
    keys = group_keys(rows)
    arms = rows.drop_duplicates(keys).reset_index(drop=True)
    by_budget = len(keys) > 1
    arms["arm"] = [f"{v} at budget {b:g}" if by_budget else v for v, b in zip(arms["variant"], arms["budget"])]
    # a comparison is an arm beside the baseline of its own stratum (the report compares within a budget)
    strata = arms[keys[1:]].astype(str).agg("|".join, axis=1) if len(keys) > 1 else pd.Series("", index=arms.index)
    with_baseline = set(strata[arms["variant"] == spec.baseline_arm])
    arms["compared"] = (arms["variant"] != spec.baseline_arm) & strata.isin(with_baseline)
    return arms


def seed_plan(plan) -> SeedPlan:
    """The planner's line for a plan with --mde, from the pilot's noise; a UsageError where it cannot plan at all."""
    from reports.power import MAX_SEEDS, pilot_noise, read_pilot, seeds_needed

    spec, o = plan.spec, plan.options
    if spec.searcher != "grid":
        raise UsageError(
            f"--mde: {spec.name} is a search (each trial a new config); the seed planner is for grid studies"
        )
    if not spec.baseline_arm:
        raise UsageError(f"--mde: {spec.name} names no baseline arm, so it makes no comparison to plan seeds for")
    arms = planned_arms(plan)
    m = int(arms["compared"].sum())
    if m == 0:
        raise UsageError(f"--mde: this plan has no arm besides the baseline {spec.baseline_arm!r} to compare")
    folder = _pilot_folder(plan)
    pilot = read_pilot(folder) if folder else None
    if o.pilot and pilot is None:
        raise UsageError(
            f"--pilot {o.pilot}: no trials.parquet, trials.csv or trials/ there; give the study folder of an earlier "
            f"run of {spec.name} (OUTPUT/{spec.name})"
        )
    if pilot and pilot[1].get("study") not in (None, spec.name):
        raise UsageError(
            f"--pilot {o.pilot}: holds study {pilot[1]['study']!r}, not {spec.name}; the noise must be this study's"
        )
    each = o.alpha / m
    record = dict(mde=o.mde, power=o.power, alpha=o.alpha, comparisons=m, alpha_per_comparison=each)
    noise, why = pilot_noise(pilot[0], _baseline(pilot[1]) or spec.baseline_arm, spec.metric) if pilot else (None, "")
    if noise is None:
        where = f"{folder}: {why or 'no trials'}" if folder else "--output is a storage URI, so give --pilot DIR"
        line = (
            f"seeds needed: unknown, no pilot to measure the seed-to-seed noise ({where}); run one with "
            f"`python -m study.run {spec.name} --profile {plan.profile.name} --seeds 2{_output_option(o)}`, then "
            f"this again{'' if o.pilot else ' (or give --pilot DIR)'}"
        )
        return SeedPlan(line=line, record=dict(record, seeds_needed=None, pilot=str(folder) if folder else None))
    n = seeds_needed(o.mde, noise.sd, each, o.power, noise.paired)
    test = "paired t-test" if noise.paired else "two-sample t-test"
    source = (
        f"sd {noise.sd:.3g} of the per-{noise.pair_by} differences {noise.arm} - {spec.baseline_arm} ({noise.n} pairs)"
        if noise.paired
        else f"pooled seed-to-seed sd {noise.sd:.3g} ({noise.n}+ seeds an arm)"
    )
    head = (
        f"D = {o.mde:g} {spec.metric} with {o.power:.0%} power, two-sided {test} at alpha {o.alpha:g}/{m} = "
        f"{each:.3g} (Holm's first step over {m} comparison{'s' * (m != 1)}); {source} in {folder}"
    )
    if n is None:
        line = f"seeds needed: more than {MAX_SEEDS:,} per arm for {head}: D is too small against this noise"
    else:
        line = f"seeds needed: {n} per arm (this plan: {o.seeds}) for {head}; {_cost(plan, arms, n, pilot[0])}"
    if pilot[1].get("profile") not in (None, plan.profile.name):
        line += f"; note: the pilot ran the {pilot[1]['profile']} profile, this plan {plan.profile.name}"
    record.update(seeds_needed=n, test=test, sd=noise.sd, paired=noise.paired, pilot_seeds=noise.n, pilot=str(folder))
    return SeedPlan(line=line, record=record)


def _pilot_folder(plan) -> Path | None:
    """--pilot, else the study's own results folder (None where that is a storage URI: reports read local files)."""
    from trainables.storage import is_uri

    o = plan.options
    if o.pilot:
        folder = Path(os.path.expanduser(o.pilot)).resolve()
        if not folder.is_dir():
            raise UsageError(
                f"--pilot {o.pilot}: no such folder; give the study folder of an earlier run (OUTPUT/STUDY)"
            )
        return folder
    return None if is_uri(o.output) else Path(o.output) / plan.spec.name


def _output_option(o) -> str:
    """The pilot run's --output, where it is not the default one (check_output made it absolute)."""
    return "" if o.pilot or o.output == os.path.abspath("results") else f" --output {o.output}"


def _baseline(meta: dict) -> str | None:
    b = meta.get("baseline")
    return b.get("variant") if isinstance(b, dict) else b


def _cost(plan, arms: pd.DataFrame, n: int, pilot: pd.DataFrame) -> str:
    """n seeds of every arm: trials x tokens x FLOPs per token, and a wall time at the pace of the pilot's trials."""
    trials = n * len(arms)
    flops = n * float((arms["tokens"] * arms["flops_per_token"]).sum())
    if arms["tokens"].nunique() == 1 and arms["flops_per_token"].nunique() == 1:
        text = (
            f"{trials:,} trials ({n} x {len(arms)} arms) x {arms['tokens'].iloc[0]:,} tokens x "
            f"{arms['flops_per_token'].iloc[0]:.3g} FLOPs/token = {flops:.3g} FLOPs"
        )
    else:
        text = (
            f"{trials:,} trials ({n} x {len(arms)} arms), {n * int(arms['tokens'].sum()):,} tokens, {flops:.3g} FLOPs"
        )
    timed = pilot.reindex(columns=["status", "wall_s", "tokens_trained", "flops_per_token"])
    timed = timed[timed["status"] == "done"].drop(columns="status").apply(pd.to_numeric, errors="coerce")
    timed = timed[(timed > 0).all(axis=1)]  # NaN compares False: rows with every number present
    if timed.empty:
        return text + "; no wall time: the pilot's trials record none"
    # seconds per training FLOP, fixed costs included: the pilot's pace, applied to this plan's arms
    pace = float(timed["wall_s"].sum() / (timed["tokens_trained"] * timed["flops_per_token"]).sum())
    at_once = _at_once(plan)
    where = f"{at_once} at once here" if at_once else "one after another"
    return (
        f"{text}, about {_duration(pace * flops / (at_once or 1))} ({where}, at the pace of the pilot's "
        f"{len(timed)} trials: {timed['wall_s'].mean():.0f} s each)"
    )


def _at_once(plan) -> int | None:
    """Trials that run at once on this machine (trainables.tune.TrialResources' rule); None on a cluster or GPUs."""
    o = plan.options
    if o.address not in (None, "local") or plan.gpus > 0:
        return None
    cpus = os.cpu_count() or 1
    return max(1, min(int(cpus // (plan.workers * o.cpus_per_worker)), cpus))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def check_planner_options(options, metric: str):
    """--mde, --power, --alpha and --pilot, before anything is planned."""
    if options.mde is not None and not (math.isfinite(options.mde) and options.mde > 0):
        raise UsageError(f"--mde {options.mde:g}: must be a positive difference in {metric}'s units, e.g. 0.01")
    for name, default in (("alpha", 0.05), ("power", 0.8)):
        value = getattr(options, name)
        if not 0 < value < 1:
            raise UsageError(f"--{name} {value:g}: must be in (0, 1), e.g. {default}")
        if value != default and options.mde is None:
            raise UsageError(f"--{name}: it sizes the seed planner; give --mde D (the difference to detect) with it")
    if options.pilot and options.mde is None:
        raise UsageError("--pilot: it feeds the seed planner; give --mde D (the difference to detect) with it")
