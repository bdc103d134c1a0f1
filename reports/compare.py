"""
Compare two runs of one study (the same study at two commits, or on the cpu and gpu profiles):

    python -m reports.compare DIR_A DIR_B [--output PATH]

Arms are matched by their label (the study's axis values, and the budget where a study ran several), so a profile
change, which changes base keys and not arm labels, still matches them. For each matched arm: its mean in A and B,
the difference B - A with a 95% Welch interval (the runs are independent), p and Holm's p across arms; then whether
the arms rank alike (Kendall's tau, the best arm) and whether each arm's verdict against the baseline agrees. The
page is self-contained HTML like the report; each run is read by study.api's load_study (a folder or a storage
URI), and its per-arm verdicts are its summary(), so the page and the notebook never disagree.
"""

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.offline
from scipy import stats

from reports.analyse import group_keys, holm, verdict, welch_test
from reports.collect import read_trial_files, redact
from reports.figures import LAYOUT, _ci_error
from reports.html import CSS, JS, ci_text, esc, figure_div, fmt, section, table
from trainables.storage import is_uri, write_atomic

SEED_KEYS = ("seed", "init_seed", "data_seed")  # differ within a run by design: never base keys
# the settings whose difference between the runs the page names (the place, start time and counts always differ)
COMPARED_SETTINGS = ("profile", "--set", "seeds per config", "git commit", "device", "torch")


class CompareError(ValueError):
    """The two places cannot be compared (missing, no study, different studies, nothing in common)."""


@dataclass
class Run:
    tag: str  # "A" or "B"
    where: str  # as the user gave it
    name: str  # a short name for the page and the file name (the folder's, with its parent where A's and B's match)
    meta: dict  # study.json
    study: object  # reports.collect.Study: metric, mode, baseline and the normalised trials table
    summary: pd.DataFrame  # StudyResult.summary(): one row per arm
    keys: list  # ["variant"] or ["variant", "budget"]
    warnings: list = field(default_factory=list)

    def arms(self) -> dict:
        """arm key (variant,) or (variant, budget) -> its summary row."""
        return {tuple(r[k] for k in ["arm"] + self.keys[1:]): r for r in self.summary.to_dict(orient="records")}

    def values(self, key) -> np.ndarray:
        """The metric of the arm's finished trials (as summary() averaged them)."""
        t = self.study.trials
        m = self.study.metric
        mask = (t["status"] == "done") & (t["variant"] == key[0])
        for k, v in zip(self.keys[1:], key[1:]):
            mask &= t[k] == v
        return pd.to_numeric(t.loc[mask, m], errors="coerce").to_numpy(dtype=float)


def _text(v) -> str:
    return "(none)" if v is None else fmt(v)


def arm_label(key) -> str:
    return str(key[0]) + (f" @ {fmt(key[1])}" if len(key) > 1 else "")


def load_run(where: str, tag: str) -> Run:
    """One run, read as the notebook reads it; CompareError (one line) when it is no study with finished trials."""
    # here, not at the top: the reports package depends on the study package only for this reader (and its URIs)
    from study.api import load_study

    try:
        res = load_study(where)
        summary = res.summary()
        study = res._study()
    except (ValueError, OSError) as e:  # UsageError is a ValueError; so is a torn parquet (pyarrow's ArrowInvalid)
        text = str(e).strip().splitlines()
        raise CompareError(text[0] if text else f"{where}: cannot read it ({type(e).__name__})") from None
    if summary.empty or not (summary["n"] > 0).any():
        raise CompareError(
            f"{where}: no finished trials (status done with a {study.metric}): a run to compare needs at least one"
        )
    return Run(
        tag=tag,
        where=where,
        name=where,
        meta=res.meta,
        study=study,
        summary=summary,
        keys=group_keys(study.trials),
        warnings=list(res.warnings),
    )


# -----------------------------------------------------------------------------
# Names for the page and the default file


def _parts(where: str) -> list:
    """A place's path components, last first: a URI's after its scheme, a local folder's resolved."""
    if is_uri(where):
        return [p for p in where.partition("?")[0].split("://", 1)[1].split("/") if p][::-1]
    return [p for p in Path(where).resolve().parts if p not in ("/", "")][::-1]


def run_names(a: str, b: str) -> tuple[str, str]:
    """The folders' names; where they match, with parent folders until they differ (/x/cmpA/s and /x/cmpB/s:
    cmpA/s and cmpB/s). The same place twice keeps its one name."""
    pa, pb = _parts(a) or [a], _parts(b) or [b]
    for i in range(1, max(len(pa), len(pb)) + 1):
        na, nb = "/".join(pa[:i][::-1]), "/".join(pb[:i][::-1])
        if na != nb:
            return na, nb
    return pa[0], pb[0]


def default_output(name_a: str, name_b: str) -> Path:
    def safe(s):
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("._") or "run"

    return Path.cwd() / f"compare_{safe(name_a)}_vs_{safe(name_b)}.html"


# -----------------------------------------------------------------------------
# The comparison


def verdict_words(v) -> tuple[str, bool | None]:
    """A summary() verdict as (direction, threshold met): direction is better, worse, no difference, one seed (no
    test), baseline or not compared; met is None where the study has no threshold."""
    v = str(v)
    head, _, rule = v.partition("; ")
    head = head.split(" (")[0]
    if head in ("better", "worse", "baseline"):
        direction = head
    elif head.startswith("within noise"):
        direction = "no difference"
    elif head.startswith("single run"):
        direction = "one seed (no test)"
    else:
        direction = "not compared"
    return direction, (rule.startswith("meets") if rule else None)


def conclusion_text(direction: str, met: bool | None) -> str:
    return direction + ("" if met is None else "; meets the threshold" if met else "; threshold not met")


def ranking(names: list, means: list, mode: str) -> list:
    """names ordered best first (ties keep the given order)."""
    sign = 1 if mode == "min" else -1
    return [n for _, n in sorted(zip([sign * m for m in means], names), key=lambda p: p[0])]


def base_keys(run: Run) -> dict | None:
    """The keys every trial of the run was given with one value (its trial_config.json), seeds left out: the base
    keys a profile or --set chose. None when no trial has a trial_config.json."""
    configs = read_trial_files(run.study.dir, run.study.trials, "trial_config.json", run.warnings)
    configs = [c for c in configs.values() if isinstance(c, dict)]
    if not configs:
        return None
    out = {}
    for k in set().union(*configs):
        vals = {json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}
        if k not in SEED_KEYS and len(vals) == 1 and all(k in c for c in configs):
            out[k] = configs[0][k]
    return out


def run_settings(run: Run) -> dict:
    """What study.json says about how the run was made, as short text."""
    m, args = run.meta, run.meta.get("args") if isinstance(run.meta.get("args"), dict) else {}
    env = m.get("environment") if isinstance(m.get("environment"), dict) else {}
    versions = m.get("versions") if isinstance(m.get("versions"), dict) else {}
    t = run.study.trials
    return {
        "place": run.where,
        "profile": m.get("profile"),
        "--set": json.dumps(args.get("set") or {}, sort_keys=True, default=str),
        "seeds per config": args.get("seeds"),
        "git commit": m.get("git_commit"),
        "device": env.get("device"),
        "torch": versions.get("torch"),
        "started": m.get("started"),
        "trials done / total": f"{int((t['status'] == 'done').sum())} / {len(t)}",
    }


def compare_runs(a: Run, b: Run) -> dict:
    """Everything the page shows, as plain values. CompareError when the runs are of different studies or share no
    arm."""
    sa, sb = a.study, b.study
    if sa.name != sb.name:
        raise CompareError(
            f"{a.where} is a run of study {sa.name!r} and {b.where} of study {sb.name!r}: compare two runs of one study"
        )
    if (sa.metric, sa.mode) != (sb.metric, sb.mode):
        raise CompareError(
            f"{a.where} ranks by {sa.metric} ({sa.mode}) and {b.where} by {sb.metric} ({sb.mode}): "
            "their arms' values cannot be compared"
        )
    arms_a, arms_b = a.arms(), b.arms()
    common = [k for k in arms_a if k in arms_b]  # in A's order: the baseline first, then natural order
    if not common:
        raise CompareError(
            f"{a.where} and {b.where} have no arm in common (A: {', '.join(map(arm_label, arms_a))}; "
            f"B: {', '.join(map(arm_label, arms_b))})"
        )
    metric, mode = sa.metric, sa.mode
    rows = []
    for k in common:
        ra, rb = arms_a[k], arms_b[k]
        w = welch_test(a.values(k), b.values(k))  # diff = mean(B) - mean(A)
        va, vb = verdict_words(ra["verdict"]), verdict_words(rb["verdict"])
        rows.append(
            dict(
                arm=arm_label(k),
                n_a=ra["n"],
                mean_a=ra["mean"],
                ci_a=ci_text(ra["ci_low"], ra["ci_high"]),
                n_b=rb["n"],
                mean_b=rb["mean"],
                ci_b=ci_text(rb["ci_low"], rb["ci_high"]),
                diff=w["diff"],
                ci_low=w["ci_low"],
                ci_high=w["ci_high"],
                p_value=w["p_value"],
                verdict_a=conclusion_text(*va),
                verdict_b=conclusion_text(*vb),
                agree=va == vb,
                _ci=(ra["ci_low"], ra["ci_high"], rb["ci_low"], rb["ci_high"]),
            )
        )
    for r, ph in zip(rows, holm([r["p_value"] for r in rows])):
        r["p_holm"] = ph
        words = verdict(r["diff"], r["p_value"], ph, mode)
        r["runs"] = {"better": "B better", "worse": "B worse", "single run: no interval": "no interval (one seed)"}.get(
            words, words
        )

    # ranking over the arms both ran
    ok = [r for r in rows if math.isfinite(r["mean_a"]) and math.isfinite(r["mean_b"])]
    order_a = ranking([r["arm"] for r in ok], [r["mean_a"] for r in ok], mode)
    order_b = ranking([r["arm"] for r in ok], [r["mean_b"] for r in ok], mode)
    tau, tau_p = (math.nan, math.nan)
    if len(ok) >= 2:
        res = stats.kendalltau([r["mean_a"] for r in ok], [r["mean_b"] for r in ok])
        tau, tau_p = float(res.statistic), float(res.pvalue)

    # the study's conclusion: each arm's verdict against the baseline, or the best arm where there is no baseline
    base_a, base_b = sa.baseline, sb.baseline
    judged = [r for r in rows if r["verdict_a"] != "baseline" or r["verdict_b"] != "baseline"]
    if base_a and base_a == base_b and judged:
        differ = [r for r in judged if not r["agree"]]
        if not differ:
            sentence = (
                f"The study's conclusion is the same in both runs: every arm's verdict against the baseline "
                f"{base_a} agrees over the {len(common)} arm{'s' * (len(common) > 1)} both ran ("
                + "; ".join(f"{r['arm']}: {r['verdict_a']}" for r in judged)
                + ")."
            )
        else:
            sentence = (
                f"The study's conclusion differs between the runs: {len(differ)} of {len(judged)} arms' verdicts "
                f"against the baseline {base_a} change ("
                + "; ".join(f"{r['arm']}: {r['verdict_a']} in A, {r['verdict_b']} in B" for r in differ)
                + ")."
            )
        same = not differ
    else:
        why = (
            f"the runs have different baselines ({base_a} in A, {base_b} in B)"
            if base_a and base_b and base_a != base_b
            else "there is no baseline in both runs to judge the arms against"
        )
        same = bool(order_a) and order_a[0] == order_b[0]
        best = f"{order_a[0]} in both" if same else f"{order_a[0]} in A, {order_b[0]} in B" if order_a else "none"
        sentence = (
            f"The study's conclusion, read as its best arm since {why}, is "
            + ("the same" if same else "not the same")
            + f" in both runs: {best}."
        )

    # how the runs were made: study.json's settings and the base keys the trials were given
    set_a, set_b = run_settings(a), run_settings(b)
    settings = [
        dict(setting=k, a=set_a[k], b=set_b[k], differs=k in COMPARED_SETTINGS and set_a[k] != set_b[k]) for k in set_a
    ]
    keys_a, keys_b = base_keys(a), base_keys(b)
    base_diff = None
    if keys_a is not None and keys_b is not None:
        base_diff = []
        for k in sorted(set(keys_a) | set(keys_b)):
            va, vb = keys_a.get(k, "(not a base key)"), keys_b.get(k, "(not a base key)")
            if json.dumps(va, default=str) != json.dumps(vb, default=str):
                base_diff.append(dict(key=k, a=va, b=vb))
    return dict(
        study=sa.name,
        metric=metric,
        mode=mode,
        baseline=(base_a, base_b),
        rows=rows,
        only_a=[arm_label(k) for k in arms_a if k not in arms_b],
        only_b=[arm_label(k) for k in arms_b if k not in arms_a],
        order_a=order_a,
        order_b=order_b,
        tau=tau,
        tau_p=tau_p,
        best_same=bool(order_a) and order_a[0] == order_b[0],
        conclusion_same=same,
        conclusion=sentence,
        settings=settings,
        base_diff=base_diff,
        warnings=[f"A: {w}" for w in a.warnings] + [f"B: {w}" for w in b.warnings],
    )


# -----------------------------------------------------------------------------
# The page


def means_figure(a: Run, b: Run, cmp: dict) -> go.Figure:
    """Each arm's mean with its 95% interval, A and B side by side (the arms both ran)."""
    labels = [esc(r["arm"]) for r in cmp["rows"]]
    fig = go.Figure()
    # numeric x, A just left of each arm and B just right: plotly's grouped scatter autoranges from 0 as bars do
    for tag, run, colour, i, shift in (("A", a, "#1f77b4", 0, -0.12), ("B", b, "#ff7f0e", 2, 0.12)):
        pts = [dict(mean=r[f"mean_{tag.lower()}"], ci_low=r["_ci"][i], ci_high=r["_ci"][i + 1]) for r in cmp["rows"]]
        fig.add_trace(
            go.Scatter(
                x=[j + shift for j in range(len(pts))],
                y=[p["mean"] for p in pts],
                mode="markers",
                name=esc(f"{tag}: {run.name}"),
                marker=dict(color=colour, size=11),
                error_y=_ci_error(pts),
                text=[f"{label}, n = {r[f'n_{tag.lower()}']}" for label, r in zip(labels, cmp["rows"])],
                hovertemplate="%{text}: %{y:.4f}<extra></extra>",
            )
        )
    fig.update_xaxes(
        tickmode="array", tickvals=list(range(len(labels))), ticktext=labels, range=[-0.5, len(labels) - 0.5]
    )
    fig.update_xaxes(title_text="arm", showgrid=False, zeroline=False)
    fig.update_yaxes(title_text=esc(cmp["metric"]), tickformat=".4~g")
    fig.update_layout(**LAYOUT, height=440, title=esc(f"{cmp['metric']}: each arm's mean and 95% interval in A and B"))
    return fig


def render(a: Run, b: Run, cmp: dict) -> str:
    m = cmp["metric"]
    better = "lower" if cmp["mode"] == "min" else "higher"
    tau = (
        f"{cmp['tau']:.3g} (p = {fmt(cmp['tau_p'])})"
        if math.isfinite(cmp["tau"])
        else "undefined (one arm, or tied means)"
    )
    best = (
        f"the best arm is {cmp['order_a'][0]} in both runs"
        if cmp["best_same"]
        else f"the best arm is {cmp['order_a'][0]} in A and {cmp['order_b'][0]} in B"
        if cmp["order_a"]
        else "no arm has a mean in both runs"
    )
    differing = [s for s in cmp["settings"] if s["differs"]]
    items = [
        f"{len(cmp['rows'])} arms in both runs, matched by their label; "
        + (f"only in A: {', '.join(cmp['only_a'])}; " if cmp["only_a"] else "")
        + (f"only in B: {', '.join(cmp['only_b'])}; " if cmp["only_b"] else "")
        + ("every arm is in both" if not (cmp["only_a"] or cmp["only_b"]) else "those are left out below"),
        f"ranking of the arms by mean {m} ({better} is better): Kendall's tau between A and B {tau}; {best}",
        "settings that differ (study.json): "
        + ("; ".join(f"{s['setting']} {_text(s['a'])} in A, {_text(s['b'])} in B" for s in differing) or "none"),
    ]
    if cmp["base_diff"] is not None:
        items.append(
            f"{len(cmp['base_diff'])} base key{'s' * (len(cmp['base_diff']) != 1)} differ (the trials' "
            "trial_config.json): " + (", ".join(d["key"] for d in cmp["base_diff"]) or "none")
        )
    moved = [r for r in cmp["rows"] if r["runs"] in ("B better", "B worse")]
    items.append(
        f"{len(moved)} of {len(cmp['rows'])} arms' {m} differ between the runs after Holm's correction"
        + (": " + ", ".join(f"{r['arm']} ({r['diff']:+.4g})" for r in moved) if moved else "")
    )
    summary = "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"

    cols = ["arm", "n_a", "mean_a", "ci_a", "n_b", "mean_b", "ci_b", "diff", "ci_low", "ci_high", "p_value"]
    cols += ["p_holm", "runs", "verdict_a", "verdict_b", "agree"]
    headers = ["arm", "n A", f"mean {m} A", "95% CI A", "n B", f"mean {m} B", "95% CI B", "B - A"]
    headers += ["95% CI low", "95% CI high", "p", "Holm p", "B vs A", "verdict in A", "verdict in B", "agree"]
    arms = (
        f"<p class='note'>B - A: each arm's mean in B minus its mean in A, with Welch's unequal-variance t-test and its "
        f"95% interval; the runs are independent (their trials are not paired, even where their seeds coincide). "
        f"p is Holm-adjusted across the {len(cmp['rows'])} arms. The verdicts are each run's own, against its "
        f"baseline ({esc(cmp['baseline'][0])} in A, {esc(cmp['baseline'][1])} in B), as its report words them: "
        f"better, worse, no difference (within noise), or one seed (no test).</p>"
        + figure_div(means_figure(a, b, cmp))
        + table(cmp["rows"], cols, headers)
    )
    n = max(len(cmp["order_a"]), 1)
    rank_rows = [dict(rank=i + 1, a=x, b=y) for i, (x, y) in enumerate(zip(cmp["order_a"], cmp["order_b"]))]
    rank = (
        f"<p>Kendall's tau (scipy's tau-b) between the arms' means in A and in B: {esc(tau)}, over {n} arms; "
        f"1 is the same order, -1 the reverse.</p>"
        + table(rank_rows, ["rank", "a", "b"], ["rank", f"A: {a.name}", f"B: {b.name}"], sortable=False)
    )
    runs_rows = [dict(s, differs="differs" if s["differs"] else "") for s in cmp["settings"]]
    runs = table(runs_rows, ["setting", "a", "b", "differs"], ["", f"A: {a.name}", f"B: {b.name}", ""], sortable=False)
    if cmp["base_diff"] is None:
        runs += "<p class='muted'>No trial_config.json in one of the runs: base keys not compared.</p>"
    else:
        runs += (
            "<h3>Base keys that differ</h3><p class='note'>Keys every trial of a run was given with one value "
            "(trial_config.json), as a profile or --set chose them; a profile changes these, not the arms.</p>"
            + table(cmp["base_diff"], ["key", "a", "b"], ["key", f"A: {a.name}", f"B: {b.name}"], sortable=False)
        )
    sections = [
        ("summary", "Summary", summary),
        ("arms", "Arms, A and B", arms),
        ("ranking", "Ranking", rank),
        ("runs", "The runs", runs),
    ]
    if cmp["only_a"] or cmp["only_b"]:
        only = [dict(arm=x, run="A") for x in cmp["only_a"]] + [dict(arm=x, run="B") for x in cmp["only_b"]]
        sections.append(("only", "Arms in one run only", table(only, ["arm", "run"])))
    if cmp["warnings"]:
        sections.append(
            ("warnings", "Warnings", "<ul>" + "".join(f"<li>{esc(w)}</li>" for w in cmp["warnings"]) + "</ul>")
        )
    nav = "".join(f"<a href='#{sid}'>{esc(title)}</a>" for sid, title, _ in sections)
    colour = "#a5d6a7" if cmp["conclusion_same"] else "#ffab91"
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{esc(cmp['study'])}: {esc(a.name)} vs {esc(b.name)}</title><style>{CSS}</style>",
            f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script></head><body>",
            f"<header><h1>Study {esc(cmp['study'])}: two runs compared</h1>",
            f"<p>A: {esc(a.where)} &middot; B: {esc(b.where)}</p>",
            f"<p>metric {esc(m)} ({esc(cmp['mode'])}) &middot; page generated {esc(generated)}</p>",
            f"<p class='verdict' style='color:{colour}'>{esc(cmp['conclusion'])}</p><nav>{nav}</nav></header><main>",
            "".join(section(sid, title, body) for sid, title, body in sections),
            f"</main><script>{JS}</script></body></html>",
        ]
    )


def write_comparison(where_a: str, where_b: str, output=None) -> Path:
    """Reads both runs, compares them and writes the page whole (a temporary file, then a rename); its path.
    CompareError, with nothing written, when they cannot be compared."""
    name_a, name_b = run_names(where_a, where_b)
    a, b = load_run(where_a, "A"), load_run(where_b, "B")
    a.name, b.name = name_a, name_b
    cmp = compare_runs(a, b)
    path = Path(output) if output else default_output(name_a, name_b)
    if not path.parent.is_dir():
        raise CompareError(f"--output {path}: no folder {path.parent} to write it in")
    if path.is_dir():
        raise CompareError(f"--output {path}: a folder; give a file name (compare.html)")
    page = redact(render(a, b, cmp))  # as the report: no credential from the environment reaches the page
    try:
        write_atomic(path, page)
    except OSError as e:
        raise CompareError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m reports.compare",
        description="Compare two runs of one study: arms matched by their label, each arm's difference B - A with a "
        "95%% Welch interval, whether the ranking and the verdicts agree. Writes one self-contained HTML page.",
    )
    p.add_argument("run_a", help="run A: a study folder (results/NAME) or its storage URI")
    p.add_argument("run_b", help="run B: another run of the same study")
    p.add_argument("--output", help="the page's path (default: compare_A_vs_B.html in the current folder)")
    args = p.parse_args(argv)
    try:
        path = write_comparison(args.run_a, args.run_b, args.output)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
