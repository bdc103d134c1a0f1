"""The plan a study registers in its study.json before its first trial: hypothesis, metric and mode, baseline, arms,
decision rule (the study's threshold, --mde), alpha, power, seeds and the test, with the sha256 of these fields
(reports/plan.py). A --resume must keep them; only the seeds may grow, and that is recorded as a deviation."""

import json
from datetime import UTC, datetime

from reports.analyse import percent
from reports.plan import ASHA_FIELDS, PLAN_FIELDS, plan_sha256


def plan_fields(plan) -> dict:
    """The registered fields of a Plan, as study.json will hold them (tuples as lists), so a resume compares like
    with like."""
    from study.seeds import planned_arms

    spec, o = plan.spec, plan.options
    arms = planned_arms(plan) if spec.searcher == "grid" else None
    m = int(arms["compared"].sum()) if arms is not None and spec.baseline_arm else 0
    fields = dict(
        hypothesis=spec.hypothesis,
        metric=spec.metric,
        mode=spec.mode,
        baseline=spec.baseline_arm,
        arms=list(arms["arm"]) if arms is not None else None,
        comparisons=m,
        decision_rule=dict(threshold=spec.threshold, mde=o.mde, text=_rule(spec, o, m)),
        alpha=o.alpha,
        power=o.power,
        seeds=_seeds(plan),
        test=_test(spec, m),
    )
    assert tuple(fields) == PLAN_FIELDS
    if spec.scheduler == "asha":  # the share of trials ASHA may never stop (the pruning audit)
        fields["audit_fraction"] = plan.audit_fraction
    return json.loads(json.dumps(fields))


def registered_plan(plan, recorded: str) -> dict:
    """study.json's "plan": the fields, their sha256, when they were recorded and what the seed planner said (the
    last two outside the hash: the planner's pilot may grow between a start and its resume)."""
    fields = plan_fields(plan)
    planner = {"planner": plan.seed_plan.record} if plan.seed_plan else {}
    return {**fields, "sha256": plan_sha256(fields), "recorded": recorded, **planner, **search_fields(plan)}


def search_fields(plan) -> dict:
    """An Optuna search's own plan: the seeds each trial's value is the mean of, and the confirmation re-run of its
    best configs (--set confirm_top, confirm_seeds; 0: none). Outside the hash, as the --set values they come from
    are: a --resume must give the same ones anyway."""
    if plan.spec.searcher != "optuna":
        return {}
    top, seeds = plan.confirm
    return {"search": dict(seeds_per_trial=plan.options.seeds, confirm_top=top, confirm_seeds=seeds)}


def _seeds(plan):
    """--seeds N as N; --seeds auto as the sequential rule in words (its cap and D are in the args and the rule)."""
    if not plan.sequential:
        return plan.options.seeds
    from reports.sequential import MIN_SEEDS, look_alpha

    k = len(plan.axes["seed"])
    return (
        f"sequential: {MIN_SEEDS} per arm, then one more per round to each arm still undecided, up to {k}; each "
        f"look's paired interval at alpha {look_alpha(plan.options.alpha, k):.3g} (alpha {plan.options.alpha:g} "
        f"split evenly over the {k - 1} looks, Bonferroni)"
    )


def _rule(spec, o, m: int) -> str:
    if not m:
        better = "lower" if spec.mode == "min" else "higher"
        return f"no comparison with a baseline: the report ranks the trials by {spec.metric} ({better} is better)"
    if spec.threshold is not None:
        rule = (
            f"an arm meets the hypothesis when it beats the baseline by at least {percent(spec.threshold)} (a ratio "
            f"of means over seeds), with the whole 95% interval of the ratio past that line"
        )
    else:
        rule = f"an arm differs from the baseline when its Holm-adjusted p-value is below {o.alpha:g}"
    if o.seeds == "auto":
        rule += (
            f"; seeds are added round by round until each arm's paired interval excludes 0 (it differs) or lies "
            f"inside +/-{o.mde:g} (no difference of D = {o.mde:g} or more), or the arm reaches the cap"
        )
    elif o.mde is not None:
        rule += (
            f"; D = {o.mde:g} {spec.metric} is the smallest difference worth detecting, planned at {o.power:.0%} power"
        )
    return rule


def _test(spec, m: int) -> str:
    if spec.searcher != "grid":
        return f"none: a search ranks its trials by {spec.metric}"
    if not m:
        return "none: no arm is compared with a baseline"
    return (
        f"two-sided paired t-test of each arm's {spec.metric} against the baseline's, trials paired by data_seed "
        f"(Welch's test where fewer than two pairs form), Holm-corrected over {m} comparison{'s' * (m != 1)}"
    )


def plan_changes(recorded: dict, now: dict) -> list[tuple[str, object, object]]:
    """(field, registered, now) for each registered field a resume would change; the seeds are left to the caller
    (they may grow). The decision rule's words count only when nothing else explains them."""

    def flat(p):
        out = {}
        # an ASHA field counts where the plan registered it (a plan registered before the field existed has none)
        for k in PLAN_FIELDS + tuple(k for k in ASHA_FIELDS if k in recorded):
            v = p.get(k)
            out.update({f"{k}.{s}": w for s, w in v.items()} if isinstance(v, dict) else {k: v})
        return out

    then, current = flat(recorded), flat(now)
    changed = [(k, then.get(k), current.get(k)) for k in current if k != "seeds" and then.get(k) != current.get(k)]
    if len(changed) > 1:
        changed = [c for c in changed if c[0] != "decision_rule.text"]
    return changed


OPTION_OF = {"decision_rule.mde": "--mde", "alpha": "--alpha", "power": "--power"}


def describe(field: str, value) -> str:
    """A changed field as the option or the plan field that sets it: --mde 0.01, arms softmax,softmax1."""
    if value is None:
        text = "none"
    elif isinstance(value, list):
        text = ",".join(map(str, value))
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, str) and " " in value:
        text = repr(value)
    else:
        text = str(value)
    return f"{OPTION_OF.get(field, field)} {text}"


def seeds_deviation(then: int, now: int, added: int) -> dict:
    """study.json's record of seeds added on a --resume: {when, what, kind}."""
    return dict(
        when=datetime.now(UTC).isoformat(timespec="seconds"),
        what=f"seeds extended from {then} to {now} per config by --seeds {now} on --resume ({added} more trials)",
        kind="seeds",
    )
