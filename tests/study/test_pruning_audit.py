"""The pruning audit: a share of trials ASHA may never stop (study.audit.AuditedASHA), `--set audit_fraction`,
and the report's statistics (reports.analyse.pruning_audit) on hand-made trials tables, against scipy and hand
arithmetic. The end-to-end run (marked ray) checks the report of a real nanohead_search."""

import hashlib
import json
import math
import random
from pathlib import Path

import pandas as pd
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from scipy import stats
from study_cli import run_cli
from test_study_plan import FIELDS  # the registered fields, written out once

from reports.analyse import pruning_audit
from reports.collect import Study
from study.audit import AuditedASHA, audited
from study.catalog import get_study
from study.registration import plan_changes, plan_fields, registered_plan
from study.run import RunOptions, make_plan

ASHA = dict(time_attr="training_iteration", max_t=9, grace_period=1, reduction_factor=3, metric="v", mode="min")


def fake_trial(name: str) -> Trial:
    return Trial("__fake", trial_id=name, stub=True, trial_name_creator=lambda t: name)


def test_audited_trials_are_never_stopped_and_still_count_towards_the_cutoffs():
    names = [f"s_{i:04d}" for i in range(40)]
    marked = {n for n in names if audited(n, 7, 0.3)}
    assert 0 < len(marked) < len(names)
    audit, plain = AuditedASHA(audit_fraction=0.3, seed=7, **ASHA), ASHAScheduler(**ASHA)
    trials = {n: fake_trial(n) for n in names}
    for t in trials.values():
        audit.on_trial_add(None, t)
        plain.on_trial_add(None, t)
    rng = random.Random(0)
    stopped, overruled = set(), 0
    for it in range(1, 9):  # every trial reports each iteration below max_t, in a shuffled order
        for n in rng.sample(names, len(names)):
            if n in stopped:
                continue
            result = {"training_iteration": it, "v": rng.random() + 1 / it}
            a, p = audit.on_trial_result(None, trials[n], result), plain.on_trial_result(None, trials[n], result)
            if n in marked:
                assert a == TrialScheduler.CONTINUE  # an audited trial runs on, whatever plain ASHA says
                overruled += p == TrialScheduler.STOP
            else:
                # the same decision as Ray's own ASHA fed every result: audited results count at every rung
                assert a == p
                if a == TrialScheduler.STOP:
                    stopped.add(n)
    assert stopped and overruled  # both paths ran
    assert not stopped & marked


def test_audited_draw_is_a_seeded_share():
    names = [f"t{i}" for i in range(4000)]
    share = sum(audited(n, 0, 0.1) for n in names) / len(names)
    assert abs(share - 0.1) < 4 * math.sqrt(0.1 * 0.9 / len(names))
    assert [audited(n, 0, 0.1) for n in names] == [audited(n, 0, 0.1) for n in names]  # the same every time
    assert [audited(n, 1, 0.1) for n in names] != [audited(n, 0, 0.1) for n in names]  # the seed moves it
    assert not any(audited(n, 0, 0.0) for n in names)


def audit_study(tmp_path, rows, finals, rung1, keys=("x",), rf=3):
    """A Study as reports.collect loads one: trials with status/audited/key columns, curves with the metric at
    iteration 1 (step 10) for every trial and at iterations 2, 3 (steps 20, 30) for those that ran to the end."""
    trials = pd.DataFrame(rows)
    trials["variant"] = trials["trial"]
    trials["val_bpb"] = [finals.get(n, rung1[n]) for n in trials["trial"]]
    curves = []
    for n in trials["trial"]:
        curves.append(dict(trial=n, variant=n, step=10, val_bpb=rung1[n]))
        if n in finals:
            curves += [
                dict(trial=n, variant=n, step=20, val_bpb=finals[n] + 0.1),
                dict(trial=n, variant=n, step=30, val_bpb=finals[n]),
            ]
    meta = dict(
        study="s",
        metric="val_bpb",
        mode="min",
        asha=dict(max_t=3, milestones=[1, 3], reduction_factor=rf, audit_fraction=0.5, seed=0, keys=list(keys)),
    )
    return Study(dir=tmp_path, meta=meta, trials=trials, curves=pd.DataFrame(curves))


def test_rung_statistics_by_hand(tmp_path):
    # rung 1 (iteration 1) values 1..9; ASHA (rf 3) keeps the best third: cut-off 3.667 (rewards -9..-1, the
    # 66.7th percentile -4 + (5.333 - 5) = -3.667), so 4..9 are below it
    rung1 = {f"t{i}": float(i) for i in range(1, 10)}
    is_audited = {"t2", "t4", "t6", "t8", "t9"}
    stopped = {"t5", "t7"}  # the non-audited trials ASHA stopped at rung 1
    finals = {"t1": 1.0, "t2": 2.0, "t3": 2.5, "t4": 1.5, "t6": 3.0, "t8": 0.9, "t9": 4.0}
    rows = [
        dict(trial=n, status="stopped" if n in stopped else "done", audited=n in is_audited, x=float(i))
        for i, n in enumerate(rung1, 1)
    ]
    a = pruning_audit(audit_study(tmp_path, rows, finals, rung1))
    assert a["n_audited"] == 5 and a["milestones"] == [1]  # 3 is max_t: every trial there has ended
    # 7 trials ran to the end: k = ceil(7 / 3) = 3, the top 3 are t8 (0.9), t1 (1.0), t4 (1.5)
    assert a["k"] == 3 and a["n_final"] == 7
    (r,) = a["rungs"]
    a_names = ["t2", "t4", "t6", "t8", "t9"]
    tau, p = stats.kendalltau([rung1[n] for n in a_names], [finals[n] for n in a_names])
    assert r["tau"] == pytest.approx(tau) and r["tau_p"] == pytest.approx(p)
    # audited below the cut-off: t4, t6, t8, t9; of those t4 and t8 end in the top 3
    assert (r["would_stop"], r["in_top_k"], r["chance"]) == (4, 2, 0.5)
    z, n, ph = stats.norm.ppf(0.975), 4, 0.5  # Wilson's interval, written out
    centre = (ph + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((centre - half, centre + half))


def test_too_few_audited_trials_say_so(tmp_path):
    rung1 = {f"t{i}": float(i) for i in range(1, 7)}
    finals = {"t1": 1.0, "t2": 2.0, "t3": 1.5}
    rows = [
        dict(trial=n, status="done" if n in finals else "stopped", audited=n in ("t2", "t3"), x=float(i))
        for i, n in enumerate(rung1, 1)
    ]
    a = pruning_audit(audit_study(tmp_path, rows, finals, rung1))
    assert a["too_few"].startswith("too few audited trials to say anything: 2 finished") and a["rungs"] == []


def test_an_arm_stopped_more_often_than_its_final_rank_justifies_is_flagged(tmp_path):
    # arm a: its 6 stoppable trials all stopped (the study: 6 of 12, 50%), yet its 2 audited trials end in the top
    # half; arm b: none stopped, its audited trials at the bottom. a's excess: (1 - 0.5) - (0 - 0.5) = 1 >= 0.25
    rows, rung1, finals = [], {}, {}
    for arm, stop in (("a", True), ("b", False)):
        for i in range(6):
            n = f"{arm}{i}"
            rows.append(dict(trial=n, status="stopped" if stop else "done", audited=False, arm=arm))
            rung1[n] = 3.0 + i / 10 if stop else 1.0 + i / 10
            if not stop:
                finals[n] = 0.8 + i / 10
    for n, final in (("a_au0", 1.0), ("a_au1", 1.1), ("b_au0", 2.0), ("b_au1", 2.1)):
        rows.append(dict(trial=n, status="done", audited=True, arm=n[0]))
        rung1[n], finals[n] = final + 1, final
    a = pruning_audit(audit_study(tmp_path, rows, finals, rung1, keys=("arm",)))
    by = {r["bin"]: r for r in a["bins"]}
    assert by["a"]["stopped_share"] == 1.0 and by["a"]["bottom_half_share"] == 0.0
    assert by["a"]["excess"] == pytest.approx(1.0) and by["a"]["flagged"]
    assert by["b"]["excess"] == pytest.approx(-1.0) and not by["b"]["flagged"]
    assert len(a["flags"]) == 1 and a["flags"][0].startswith("arm in a: ASHA stopped 100% of its 6 trials")


def test_numeric_keys_are_binned_in_thirds(tmp_path):
    rung1 = {f"t{i}": float(i) for i in range(1, 10)}
    finals = {n: v for n, v in rung1.items()}
    rows = [dict(trial=n, status="done", audited=True, x=float(i)) for i, n in enumerate(rung1, 1)]
    a = pruning_audit(audit_study(tmp_path, rows, finals, rung1))
    assert [r["n_audited"] for r in a["bins"]] == [3, 3, 3] and len({r["bin"] for r in a["bins"]}) == 3


def search_plan(tmp_path, **set_):
    return make_plan(
        get_study("nanohead_search"), RunOptions(profile="smoke", output=str(tmp_path), wandb="disabled", set=set_)
    )


def test_the_audit_fraction_is_registered_in_the_plan_and_its_hash(tmp_path):
    plan = search_plan(tmp_path)
    assert plan.audit_fraction == 0.1  # the default with ASHA
    p = registered_plan(plan, "2026-01-01T00:00:00+00:00")
    assert p["audit_fraction"] == 0.1
    text = json.dumps(
        {k: p[k] for k in [*FIELDS, "audit_fraction"]}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert p["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    explicit = search_plan(tmp_path, audit_fraction=0.25)
    assert explicit.audit_fraction == 0.25 and "audit_fraction" not in explicit.base  # never in a trial's config
    assert "--set" in explicit.command() and "audit_fraction=0.25" in explicit.command()
    assert plan_changes(p, plan_fields(explicit)) == [("audit_fraction", 0.1, 0.25)]  # a resume may not change it
    before = {k: v for k, v in p.items() if k != "audit_fraction"}  # registered before the field existed
    assert plan_changes(before, plan_fields(plan)) == []


@pytest.mark.parametrize("value", ["1.5", "-0.1", "1", "abc", "true"])
def test_audit_fraction_out_of_range_exits_2_with_one_line(tmp_path, token_cache, value):
    out = tmp_path / "out"
    r = run_cli(
        token_cache, "nanohead_search", "--profile", "smoke", "--set", f"audit_fraction={value}", "--output", out
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"error: --set audit_fraction={value}: must be a number in [0, 1), the share of trials ASHA may never stop "
        f"(0 turns the audit off)"
    ]
    assert not out.exists()


def test_audit_fraction_on_a_study_without_asha_is_refused(tmp_path, token_cache):
    out = tmp_path / "out"
    r = run_cli(token_cache, "softmax1_ab", "--profile", "smoke", "--set", "audit_fraction=0.2", "--output", out)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "softmax1_ab stops no trial early" in r.stderr and not out.exists()
    r = run_cli(token_cache, "softmax1_ab", "--profile", "smoke", "--set", "audit_fraction=0", "--dry-run")
    assert r.returncode == 0, r.stderr  # 0 asks for no audit: nothing to refuse


@pytest.mark.ray
def test_nanohead_search_report_has_optuna_views_importances_and_audit(tmp_path, token_cache):
    out = tmp_path / "out"
    r = run_cli(
        token_cache,
        "nanohead_search",
        "--profile",
        "smoke",
        "--num-samples",
        "8",
        "--set",
        "audit_fraction=0.5",
        "--output",
        out,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    d = out / "nanohead_search"
    meta = json.loads((d / "study.json").read_text())
    assert meta["plan"]["audit_fraction"] == 0.5 and meta["asha"]["milestones"] == [1, 3]  # smoke: 3 evals
    text = json.dumps(
        {k: meta["plan"][k] for k in [*FIELDS, "audit_fraction"]},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert meta["plan"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    df = pd.read_parquet(d / "trials.parquet")
    assert list(df["audited"]) == [audited(n, 0, 0.5) for n in df["trial"]]
    assert not (df["audited"] & (df["status"] == "stopped")).any()  # ASHA stopped no audited trial
    res = json.loads((d / "results.json").read_text())
    imp = res["optuna"]["importances"]
    assert {r["param"] for r in imp} == {"nanohead_proportion", "nanohead_dim", "n_layer", "lr"}
    assert all(r["fits"] == 8 and r["sd"] is not None and r["sd"] >= 0 for r in imp)
    assert sum(r["mean"] for r in imp) == pytest.approx(1.0)
    audit = res["pruning_audit"]
    assert audit["n_audited"] == int(df["audited"].sum())
    page = (d / "report.html").read_text()
    for title in ("Optimisation history", "Parallel coordinates", "Each searched key (slice)", "Pruning audit"):
        assert title in page
    assert "mean ± sd over 8 fits" in page
    if audit.get("too_few"):
        assert "too few audited trials to say anything" in page
    else:
        assert "Kendall" in page and [r["milestone"] for r in audit["rungs"]] == [1]
    assert "<h3>Per config</h3>" not in page  # n=1 rows: gone for a search without seeds
    assert "<script src=" not in page and "<link" not in page  # everything inline, offline
    assert Path(d / "optuna.db").exists()


def test_asha_counts_the_evals_a_set_max_steps_gives():
    """ASHA's max_t is the trials' own number of evals: 30 / 10 at smoke, 60 / 10 with --set max_steps=60 (a max_t
    of the profile's 3 once stopped every trial of a longer run at step 30)."""
    from study.run import RunOptions, find_study, make_plan
    from study.service import asha_scheduler

    for overrides, evals in (({}, 3), ({"max_steps": 60}, 6), ({"max_steps": 60, "eval_every": 20}, 3)):
        plan = make_plan(
            find_study("nanohead_search"), RunOptions(profile="smoke", set=overrides, output="/tmp/unused")
        )
        assert asha_scheduler(plan, metric="val_bpb", mode="min")._max_t == evals, overrides
