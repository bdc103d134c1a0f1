"""Sequential seeding's rounds (`--seeds auto`): the planned trials each round runs. The decision, which arms still
need a seed, is reports.sequential's; study.service runs the rounds."""

import pandas as pd

from reports.sequential import MIN_SEEDS, undecided_arms


def trial_arm(plan, trial: dict) -> str:
    """The variant a planned trial belongs to, as the report names it (reports.collect reads the same keys)."""
    return plan.spec.arm({**trial["config"], **trial["gpt"].to_dict()})


def next_round(plan, decisions: pd.DataFrame, seed: int) -> list[dict]:
    """The planned trials of the next round: those of the seed axis' value `seed` (which sets the data_seed) of the
    undecided arms, and of the baseline, which every pair needs (none when no arm is undecided). The plan holds
    every seed up to the cap (--max-seeds); a round runs its own Tune experiment of these trials alone."""
    undecided = set(undecided_arms(decisions))
    if not undecided:
        return []
    wanted = undecided | {plan.spec.baseline_arm}
    return [t for t in plan.trials if t["searched"]["seed"] == seed and trial_arm(plan, t) in wanted]


def surely_run(plan) -> list[dict]:
    """The planned trials that will run: all of a grid's, or under --seeds auto the first round's (later rounds run
    only the undecided arms' next seeds)."""
    if not plan.sequential:
        return plan.trials
    first = plan.axes["seed"][:MIN_SEEDS]
    return [t for t in plan.trials if t["searched"]["seed"] in first]
