"""
The plan a study registered before its first trial (study.json's "plan"): its fields and their sha256.
"""

import hashlib
import json

# The registered fields, in the order a report lists them; the sha256 covers exactly these.
PLAN_FIELDS = (
    "hypothesis",
    "metric",
    "mode",
    "baseline",
    "arms",
    "comparisons",
    "decision_rule",
    "alpha",
    "power",
    "seeds",
    "test",
)


def plan_sha256(plan: dict) -> str:
    """sha256 of the registered fields as canonical JSON: keys sorted, no spaces, UTF-8."""
    fields = {k: plan.get(k) for k in PLAN_FIELDS}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
