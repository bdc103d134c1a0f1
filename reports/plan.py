"""
The plan a study registered before its first trial (study.json's "plan"), the deviations from it, and the methods
paragraph a report ends with. study.run writes the plan; a report reads it back from the files alone and checks
its sha256, so a plan edited after the study started shows as such.
"""

import hashlib
import json
import math

import pandas as pd

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
# Registered only by a study whose scheduler stops trials early (ASHA): in the sha256 where present, so the plans of
# other studies, and those registered before the field existed, keep their hash.
ASHA_FIELDS = ("audit_fraction",)
REPORT_ALPHA = 0.05  # the level reports/analyse.py's verdicts use
ARCH_WORDS = {"nanochat": "nanochat-style GPT", "nanogpt": "nanoGPT"}  # GPTConfig.arch in a sentence


def plan_sha256(plan: dict) -> str:
    """sha256 of the registered fields as canonical JSON: keys sorted, no spaces, UTF-8."""
    fields = {k: plan.get(k) for k in PLAN_FIELDS} | {k: plan[k] for k in ASHA_FIELDS if k in plan}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def deviations(meta: dict, trials: pd.DataFrame) -> list[dict]:
    """Every departure from the plan: those study.run recorded (seeds added on a --resume), then those the files
    show without a record (more seeds than registered, a plan whose hash no longer matches). Each is {when, what};
    `when` is None for one found here."""
    plan = meta.get("plan") if isinstance(meta.get("plan"), dict) else None
    out = [d for d in meta.get("deviations") or [] if isinstance(d, dict) and d.get("what")]
    if plan is None:
        return out
    if plan.get("sha256") != plan_sha256(plan):
        out.append(dict(when=None, what="the plan's fields no longer match its sha256: edited after it was registered"))
    seeds = _seeds_per_config(trials)
    if seeds and isinstance(plan.get("seeds"), int) and seeds > plan["seeds"]:
        if not any(d.get("kind") == "seeds" for d in out):
            out.append(
                dict(
                    when=None,
                    what=f"the trials have up to {seeds} seeds per config, the plan {plan['seeds']}, and no "
                    f"deviation records the change",
                )
            )
    return out


def _seeds_per_config(trials: pd.DataFrame) -> int | None:
    if trials.empty or "seed" not in trials:
        return None
    keys = [c for c in trials.columns if c in ("variant", "budget")]
    return int(trials.groupby(keys, dropna=False)["seed"].nunique().max())


# -----------------------------------------------------------------------------
# The methods paragraph


def methods_paragraph(meta: dict, trials: pd.DataFrame) -> str:
    """A paragraph for a paper's methods section, written from study.json and the trials table: the model and
    data, tokens per trial, seeds, the tests and their correction, and the plan with its deviations."""
    plan = meta.get("plan") if isinstance(meta.get("plan"), dict) else {}
    study = meta.get("study") or "this study"
    metric = plan.get("metric") or meta.get("metric") or "val_bpb"
    done = trials[trials["status"] == "done"] if "status" in trials else trials
    arms = sorted({str(v) for v in trials.get("variant", pd.Series(dtype=str)).dropna()})
    seeds = _seeds_per_config(trials)
    rule = sequential_rule(meta)
    s = [
        f"We ran the {study} study with nanostudies at its {meta.get('profile') or 'unknown'} profile"
        + (f" (commit {str(meta['git_commit'])[:12]})" if meta.get("git_commit") else "")
        + (f" to test the hypothesis that {_sentence(meta.get('hypothesis'))}" if meta.get("hypothesis") else "")
        + "."
    ]
    s.append(
        f"It trained {len(trials)} model{'s' * (len(trials) != 1)}: {len(arms)} arm{'s' * (len(arms) != 1)} "
        f"({', '.join(arms)})"
        + (f", {seeds} seed{'s' * (seeds != 1)} each" if seeds and not rule else "")
        + f"; {len(done)} finished."
    )
    if rule:
        per_arm = done.groupby(done["variant"].astype(str))["seed"].nunique() if len(done) else pd.Series(dtype=int)
        s.append(
            "Seeds were added sequentially: every arm ran 2, then each round added one to every arm whose paired "
            f"interval with the baseline held 0 and reached past +/-{_g(rule['mde'])} {metric}, up to "
            f"{rule['max_seeds']}, with alpha {_g(rule['alpha'])} split evenly over the {rule['max_seeds'] - 1} looks "
            f"(Bonferroni); the arms ran " + ", ".join(f"{arm} {n}" for arm, n in per_arm.items()) + " seeds."
        )
    model = _model_text(trials)
    if model:
        s.append(model)
    data = _data_text(trials)
    if data:
        s.append(data)
    s.append(_tests_text(plan, meta, metric))
    if plan:
        s.append(
            "The plan (hypothesis, metric, arms, decision rule, alpha, power, seeds and test) was recorded before the "
            "first trial"
            + (f" on {str(plan['recorded'])[:10]}" if plan.get("recorded") else "")
            + f"; its sha256 is {plan.get('sha256')}."
        )
        planner = plan.get("planner") if isinstance(plan.get("planner"), dict) else {}
        if planner.get("seeds_needed"):
            s.append(
                f"A power analysis asked for {planner['seeds_needed']} seeds per arm to detect a difference of "
                f"{_g(planner.get('mde'))} {metric} with {_pct(planner.get('power'))} power by a two-sided "
                f"{planner.get('test', 't-test')} at alpha {_g(planner.get('alpha_per_comparison'))} (alpha "
                f"{_g(planner.get('alpha'))} over {planner.get('comparisons')} comparisons, Holm's first step), from "
                f"a seed-to-seed sd of {_g(planner.get('sd'))} measured in a pilot run."
            )
    devs = deviations(meta, trials)
    if devs:
        s.append("Deviations from the plan: " + "; ".join(d["what"] for d in devs) + ".")
    elif plan:
        s.append("The study ran as planned, with no deviation.")
    return " ".join(s)


def _sentence(text) -> str:
    text = str(text).strip().rstrip(".")
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def _g(v) -> str:
    return f"{v:.3g}" if isinstance(v, (int, float)) and math.isfinite(v) else str(v)


def _pct(v) -> str:
    return f"{100 * v:g}%" if isinstance(v, (int, float)) else str(v)


def _spread(values: pd.Series, fmt="{:,}") -> str | None:
    """One value, or the range over the arms."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return None
    lo, hi = v.min(), v.max()
    lo, hi = (int(lo), int(hi)) if float(lo).is_integer() and float(hi).is_integer() else (lo, hi)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)} to {fmt.format(hi)}"


def _model_text(trials: pd.DataFrame) -> str | None:
    def col(name):
        return trials[name] if name in trials else pd.Series(dtype=float)

    params = _spread(col("params_total"))
    if params is None:
        return None
    arch = sorted({ARCH_WORDS.get(str(a), str(a)) for a in col("arch").dropna()}) or ["GPT"]
    mixers = sorted({str(m) for m in col("mixer").dropna()} - {"attention"})
    shape = [
        f"{_spread(col('n_layer'))} layers" if _spread(col("n_layer")) else None,
        f"width {_spread(col('n_embd'))}" if _spread(col("n_embd")) else None,
        f"{_spread(col('n_head'))} heads" if _spread(col("n_head")) else None,
        f"context {_spread(col('seq_len'))}" if _spread(col("seq_len")) else None,
        f"vocabulary {_spread(col('vocab_size'))}" if _spread(col("vocab_size")) else None,
    ]
    mixing = f" with the {', '.join(mixers)} token mixer" if mixers else ""
    return (
        f"The models are {' and '.join(arch)} transformers{mixing} of {params} parameters "
        f"({', '.join(p for p in shape if p)})."
    )


def _data_text(trials: pd.DataFrame) -> str | None:
    tokens = _spread(trials["tokens_trained"]) if "tokens_trained" in trials else None
    if tokens is None:
        return None
    corpus = sorted({str(c) for c in trials["corpus"].dropna()}) if "corpus" in trials else ["wiki"]
    tokenizer = sorted({str(t) for t in trials["tokenizer"].dropna()}) if "tokenizer" in trials else []
    optimizer = sorted({str(o) for o in trials["optimizer"].dropna()}) if "optimizer" in trials else ["adamw"]
    steps = _spread(trials["max_steps"]) if "max_steps" in trials else None
    text = f"Each trial trained on {tokens} tokens of the {', '.join(corpus)} corpus"
    text += f" (tokenizer {', '.join(tokenizer)})" if tokenizer else ""
    text += f", {steps} steps of {', '.join(o if o != 'adamw' else 'AdamW' for o in optimizer)}" if steps else ""
    return text + ", and was scored on the held-out split."


def _tests_text(plan: dict, meta: dict, metric: str) -> str:
    test = plan.get("test")
    if not test:
        b = meta.get("baseline")
        b = b.get("variant") if isinstance(b, dict) else b
        test = (
            f"Welch's two-sided t-test of each arm's {metric} against the baseline's over its seeds, "
            f"Holm-corrected over the arms"
            if b
            else f"no test against a baseline: the trials are ranked by {metric}"
        )
    rule = plan.get("decision_rule", {}).get("text") if isinstance(plan.get("decision_rule"), dict) else None
    alpha = plan.get("alpha", REPORT_ALPHA)
    text = f"The final {metric} on the validation split is the outcome; the comparison is {str(test).rstrip('.')}"
    text += f", at alpha {_g(alpha)}" if plan.get("baseline") or meta.get("baseline") else ""
    text += "; 95% intervals are Student-t intervals over seeds."
    if rule:
        text += f" Decision rule: {str(rule).rstrip('.')}."
    return text


# -----------------------------------------------------------------------------
# The report's first and last sections


def plan_html(study) -> str:
    """The report's opening: the registered plan, whether its sha256 still matches, and every deviation, marked."""
    from reports.html import esc, kv_table

    meta = study.meta
    plan = meta.get("plan") if isinstance(meta.get("plan"), dict) else None
    body = []
    if plan is None:
        body.append(
            "<p class='muted'>No plan was registered before the first trial: this study's study.json has none (it "
            "was started before study.run registered plans).</p>"
        )
    else:
        rule = plan.get("decision_rule") if isinstance(plan.get("decision_rule"), dict) else {}
        shown = {
            "hypothesis": plan.get("hypothesis"),
            "metric": f"{plan.get('metric')} ({'lower' if plan.get('mode') == 'min' else 'higher'} is better)",
            "baseline": plan.get("baseline") or "none",
            "arms": ", ".join(map(str, plan.get("arms") or [])) or "drawn by the search",
            "comparisons": plan.get("comparisons"),
            "decision rule": rule.get("text"),
            "alpha": plan.get("alpha"),
            "power": plan.get("power"),
            "seeds per config": plan.get("seeds"),
            "test": plan.get("test"),
            **(
                {"audit fraction": f"{plan['audit_fraction']:g} of the trials ASHA may never stop (pruning audit)"}
                if isinstance(plan.get("audit_fraction"), (int, float))
                else {}
            ),
        }
        when = f" ({esc(plan['recorded'])})" if plan.get("recorded") else ""
        check = (
            "it matches the fields below."
            if plan.get("sha256") == plan_sha256(plan)
            else "<strong class='deviation'>it does not match the fields below: they were edited after the plan "
            "was registered.</strong>"
        )
        body.append(
            f"<p>Registered in study.json before the first trial{when}, sha256 <code>{esc(plan.get('sha256'))}</code>: "
            f"{check}</p>"
        )
        body.append(kv_table(shown))
        planner = plan.get("planner") if isinstance(plan.get("planner"), dict) else {}
        if planner.get("pilot"):
            needed = planner.get("seeds_needed")
            body.append(
                f"<p class='note'>The seed planner: {esc(needed if needed else 'no answer')} seeds per arm for D = "
                f"{esc(_g(planner.get('mde')))} at {esc(_pct(planner.get('power')))} power, from the pilot "
                f"{esc(planner.get('pilot'))}.</p>"
            )
        if isinstance(plan.get("alpha"), (int, float)) and plan["alpha"] != REPORT_ALPHA:
            body.append(
                f"<p class='deviation'>The plan's alpha is {esc(_g(plan['alpha']))}; the verdicts below use "
                f"{REPORT_ALPHA:g}: judge the plan's comparisons by their Holm-adjusted p-values.</p>"
            )
    devs = deviations(meta, study.trials)
    if devs:
        items = "".join(
            f"<li class='deviation'><strong>deviation</strong> {esc(d.get('when') or '(found in the files)')}: "
            f"{esc(d['what'])}</li>"
            for d in devs
        )
        body.append(f"<h3>Deviations from the plan ({len(devs)})</h3><ul>{items}</ul>")
    elif plan is not None:
        body.append("<p>No deviation from the plan.</p>")
    return "".join(body)


def methods_html(study) -> str:
    from reports.html import esc

    return (
        f"<p class='note'>Written from study.json and the trials table, for a paper's methods section:</p>"
        f"<p class='methods'>{esc(methods_paragraph(study.meta, study.trials))}</p>"
    )


# -----------------------------------------------------------------------------
# Sequential seeding (--seeds auto)


def sequential_rule(meta: dict) -> dict | None:
    """The rule a --seeds auto study ran under, from study.json's args: mde, alpha and the seed cap; None otherwise."""
    from reports.sequential import DEFAULT_MAX_SEEDS

    args = meta.get("args") if isinstance(meta.get("args"), dict) else {}
    if args.get("seeds") != "auto" or not isinstance(args.get("mde"), (int, float)):
        return None
    return dict(
        mde=float(args["mde"]),
        alpha=float(args.get("alpha") or 0.05),
        max_seeds=int(args.get("max_seeds") or DEFAULT_MAX_SEEDS),
    )


def sequential_html(study) -> str | None:
    """Each arm's seeds under --seeds auto and why it stopped (or goes on): reports.sequential.decide over the
    finished trials, the decision the rounds took."""
    from reports.html import esc, table
    from reports.sequential import decide, look_alpha

    rule = sequential_rule(study.meta)
    if rule is None or not study.baseline:
        return None
    trials = study.trials
    decisions = decide(trials, study.baseline, rule["mde"], rule["alpha"], rule["max_seeds"], study.metric, study.mode)
    done = trials[trials["status"] == "done"] if "status" in trials else trials
    seeds = done.groupby(done["variant"].astype(str))["seed"].nunique() if len(done) else pd.Series(dtype=int)
    rows = [
        dict(
            arm=row["variant"],
            seeds=int(seeds.get(row["variant"], 0)),
            status=row["status"],
            diff=row["diff"],
            ci_low=row["ci_low"],
            ci_high=row["ci_high"],
            why=row["why"],
        )
        for row in decisions.to_dict(orient="records")
    ]
    k = rule["max_seeds"]
    return (
        f"<p class='note'>--seeds auto --mde {esc(_g(rule['mde']))}: every arm ran 2 seeds, then each round added "
        f"the next seed to the arms whose paired interval with the baseline ({esc(study.baseline)}, "
        f"{int(seeds.get(str(study.baseline), 0))} seeds) still held 0 and reached past +/-D, up to {k} seeds. "
        f"The error rate holds across the looks by a Bonferroni split: each look's interval is at alpha "
        f"{esc(_g(look_alpha(rule['alpha'], k)))} ({esc(_g(rule['alpha']))} over the {k - 1} looks an arm can "
        f"have), so a null arm is called different with probability at most {esc(_g(rule['alpha']))}.</p>"
        + table(
            rows,
            ["arm", "seeds", "status", "diff", "ci_low", "ci_high", "why"],
            ["arm", "seeds", "status", f"diff vs {study.baseline}", "interval low", "interval high", "why it stopped"],
        )
    )
