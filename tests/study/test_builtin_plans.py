"""The six built-in studies plan exactly the trials they planned before they were rebuilt from the parts a user
study is made of: plans/builtin_plans.json was written by the old catalog (its StudySpec callables, at commit
08d0e84) for every study x profile at --seeds 2 (Optuna studies: the first 4 validation draws), and each
trial's name, arm and resolved config must still be the same."""

import json
from pathlib import Path

import pytest

from study.catalog import BUILTIN
from study.profiles import PROFILES
from study.run import plan_trials, validate_search

PINNED = json.loads((Path(__file__).parent / "plans" / "builtin_plans.json").read_text())


def _plain(v):
    return v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)


def _plan(name: str, profile: str) -> list[dict]:
    spec = next(s for s in BUILTIN if s.name == name)
    if spec.searcher == "grid":
        rows = plan_trials(spec, PROFILES[profile], {}, 2, 1)
    else:
        rows = validate_search(spec, PROFILES[profile], {}, n=4)
    return [
        {
            **({"name": t["name"]} if "name" in t else {}),
            "variant": spec.arm(t["config"]),
            "config": {k: _plain(v) for k, v in sorted(t["config"].items())},
        }
        for t in rows
    ]


def test_every_builtin_study_and_profile_is_pinned():
    assert sorted(PINNED) == sorted(f"{s.name}/{p}" for s in BUILTIN for p in PROFILES)


@pytest.mark.parametrize("key", sorted(PINNED))
def test_plan_is_unchanged(key):
    name, profile = key.split("/")
    got, want = _plan(name, profile), PINNED[key]
    assert [t.get("name") for t in got] == [t.get("name") for t in want]
    for g, w in zip(got, want):
        assert g["variant"] == w["variant"], g.get("name")
        assert g["config"] == w["config"], (g.get("name"), set(g["config"].items()) ^ set(w["config"].items()))
