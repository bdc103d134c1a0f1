"""The pruning audit: a random share of a study's trials that ASHA may never stop.

Their whole learning curves show what ASHA's early stops cost (reports.analyse.pruning_audit): how well a rung's
ranking predicts the final one, and how often a config it stopped would have ended near the top.
"""

import random

from ray.tune.schedulers import ASHAScheduler, TrialScheduler


def audited(trial_name: str, seed: int, fraction: float) -> bool:
    """Whether a trial is audited: a draw seeded by the study's seed and the trial's name, so the same trial gets
    the same answer in the scheduler, in trials.parquet, after a --resume and in an extension of the search."""
    return fraction > 0 and random.Random(f"{seed}:{trial_name}").random() < fraction


class AuditedASHA(ASHAScheduler):
    """ASHA that never stops an audited trial. Every result still goes through ASHA first, so an audited trial's
    values are recorded at each rung and count towards the cut-offs the other trials are stopped by: the audit
    changes which trials run on, not where the cut-offs lie."""

    def __init__(self, *, audit_fraction: float, seed: int, **asha):
        super().__init__(**asha)
        self.audit_fraction, self.seed = audit_fraction, seed

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and audited(str(trial), self.seed, self.audit_fraction):
            # at max_t the trial has ended anyway; before it, ASHA's STOP is overruled
            return action if result.get(self._time_attr, 0) >= self._max_t else TrialScheduler.CONTINUE
        return action

    def milestones(self) -> list[int]:
        """The iterations at which its one bracket compares trials, ascending (Ray's own rungs, read back)."""
        return sorted(int(m) for m, _ in self._brackets[0]._rungs)
