"""
Assemble report.html: one self-contained page that works from file:// offline.

plotly.js is inlined once in <head>; each figure is a div whose script calls it.
Every string from the study (names, configs, errors, notes) passes through esc().
"""

import html
import json
import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import plotly.offline

from reports.analyse import (
    FLAG_EXCESS,
    FLAG_MIN_AUDITED,
    FLAG_MIN_STOPPABLE,
    TOEPLITZ_METRICS,
    percent,
    single_run_search,
    sorted_variants,
)
from reports.collect import scrub

# the trials table: these first, then the config keys, then the rest, probe_* last
TRIAL_COLUMNS = [
    "trial",
    "variant",
    "seed",
    "init_seed",
    "data_seed",
    "status",
    "val_bpb",
    "best_val_bpb",
    "val_loss",
    "train_loss",
    "params_total",
    "params_non_embedding",
    "params_embedding",
    "params_lm_head",
    "flops_per_token",
    "train_flops",
    "tokens_trained",
    "tokens_per_s",
    "mfu",
    "wall_s",
    "error",
]
MAX_SAMPLE_CHARS = 2000
MAX_SAMPLES = 5


def esc(s):
    return html.escape(str(s), quote=True)


def fmt(v):
    """A cell's text: SI suffixes for big numbers, 5 significant digits otherwise."""
    if v is None or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}" if abs(v) < 100_000 else _si(v)
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return "" if math.isnan(v) else str(v)
        if v == int(v) and abs(v) < 100_000:
            return f"{int(v):,}"
        return _si(v) if abs(v) >= 100_000 else f"{v:.5g}"
    return str(v)


def _si(v):
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.4g}{suffix}"
    return f"{v:.4g}"


def cell(v, tag="td"):
    """A table cell; numbers carry their raw value in data-v so sorting is numeric."""
    if isinstance(v, (list, tuple)):
        return f"<{tag}>{esc(', '.join(fmt(x) for x in v))}</{tag}>"
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
        raw = "" if isinstance(v, (float, np.floating)) and not math.isfinite(v) else repr(float(v))
        return f'<{tag} data-v="{esc(raw)}" class="num">{esc(fmt(v))}</{tag}>'
    return f"<{tag}>{esc(fmt(v))}</{tag}>"


def table(rows, columns, headers=None, table_id=None, sortable=True, filterable=False):
    """rows: list of dicts. Returns escaped HTML; a filter box above it when asked."""
    if not rows:
        return "<p class='muted'>none</p>"
    headers = headers or columns
    attrs = (f' id="{esc(table_id)}"' if table_id else "") + (' class="sortable"' if sortable else "")
    out = []
    if filterable and table_id:
        out.append(
            f'<input class="filter" type="search" data-table="{esc(table_id)}" '
            f'placeholder="filter rows: words that must all appear, e.g. failed p20">'
        )
    out.append(f"<div class='scroll'><table{attrs}><thead><tr>")
    out += [f"<th title='click to sort'>{esc(h)}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for r in rows:
        out.append("<tr>" + "".join(cell(r.get(c)) for c in columns) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def kv_table(d):
    """A dict as two columns; nested values as compact JSON text."""
    rows = []
    for k, v in d.items():
        text = json.dumps(v, default=str) if isinstance(v, (dict, list)) else fmt(v)
        rows.append(f"<tr><th>{esc(k)}</th><td>{esc(text)}</td></tr>")
    return "<table class='kv'>" + "".join(rows) + "</table>" if rows else "<p class='muted'>none</p>"


def figure_div(fig):
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        default_width="100%",
        default_height=f"{fig.layout.height or 450}px",
        config={"displaylogo": False, "responsive": True},
    )


def _finite(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v)


def ci_text(lo, hi, digits=4):
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "no interval"
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def section(sid, title, body):
    return f"<section id='{esc(sid)}'><h2>{esc(title)}</h2>{body}</section>"


# -----------------------------------------------------------------------------
# The sections


def summary(study, res, sections):
    c = res["counts"]
    items = [
        f"{c['total']} trials: {c['done']} done, {c['failed']} failed, {c['stopped']} stopped"
        + (f", {c['other']} other" if c["other"] else "")
    ]
    if "best" in res:
        b = res["best"]
        items.append(f"best {res['metric']}: {b[res['metric']]:.4f} ({b['trial']}, variant {b['variant']})")
    if res.get("baseline"):
        items.append(f"baseline: {res['baseline']}")
    comparisons = res.get("comparisons", [])
    if len(comparisons) > 12:  # a search with many variants: counts here, the table below has them all
        counts = pd.Series([r["verdict"] for r in comparisons]).value_counts()
        items.append(
            f"{len(comparisons)} comparisons with {res['baseline']}: "
            + ", ".join(f"{n} {v}" for v, n in counts.items())
        )
        comparisons = []
    for r in comparisons:
        where = f" at budget {fmt(r['budget'])}" if "budget" in r else ""
        head = f"{r['variant']}{where}: {r['diff']:+.4f} {res['metric']} vs {r['baseline']}"
        if _finite(r["p_value"]):
            items.append(
                f"{head}, 95% CI {ci_text(r['ci_low'], r['ci_high'])}, p = {fmt(r['p_value'])}, "
                f"Holm p = {fmt(r['p_holm'])} ({test_text(r)}): {r['verdict']}"
            )
        else:
            items.append(f"{head} ({r['verdict']})")
    if any(not _finite(r["p_value"]) for r in res.get("comparisons", [])):
        items.append(
            "some arms have fewer than 2 finished seeds: their differences cannot be told from noise; "
            "repeat them with seeds"
        )
    th = res.get("threshold")
    for r in th["arms"] if th and len(th["arms"]) <= 12 else []:
        where = f" at budget {fmt(r['budget'])}" if "budget" in r else ""
        items.append(
            f"{r['variant']}{where}: {res['metric']} / {r['baseline']}'s = {fmt(r['ratio'])}, "
            f"95% CI {ci_text(r['ci_low'], r['ci_high'])}: {r['verdict']}"
        )
    if th and len(th["arms"]) > 12:
        met = sum(r["met"] is True for r in th["arms"])
        items.append(f"{met} of {len(th['arms'])} arms meet the {percent(th['threshold'])} threshold")
    for section in sections.values():
        items += section.summary(res) if section.summary else []
    for variant, fits in res.get("fits", {}).items():
        f = fits.get("params_total")
        if f:
            items.append(
                f"{variant}: L(N) = {f['E']:.3f} + {f['A']:.3g} N^-{f['alpha']:.3f}; "
                f"alpha 95% CI {ci_text(*f['alpha_ci'], digits=3)}, E 95% CI {ci_text(*f['E_ci'], digits=3)}"
            )
    if c["failed"] or c["stopped"]:
        items.append("see Failures for the trials that did not finish and why")
    return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def test_text(r):
    """Which test an arm's comparison used, in words: 'paired t, 3 pairs (1 trial without a partner left out)'."""
    if r.get("test") != "paired t":
        return "Welch"
    left = r["n"] + r["n_baseline"] - 2 * r["n_pairs"]
    return f"paired t, {r['n_pairs']} pairs" + (
        f" ({left} trial{'s' * (left > 1)} without a partner left out)" if left else ""
    )


def pairing_note(rows):
    """What pairing bought, per paired arm: the sd of its paired differences beside the sd of a difference between
    two unpaired trials, sqrt(sd^2 + sd_baseline^2)."""
    lines = []
    for r in rows:
        unpaired = math.hypot(r.get("sd") or math.nan, r.get("sd_baseline") or math.nan)
        if r.get("test") == "paired t" and _finite(r.get("sd_diff")) and _finite(unpaired):
            where = f" at budget {fmt(r['budget'])}" if "budget" in r else ""
            ratio = f", {unpaired / r['sd_diff']:.3g}x less noise" if r["sd_diff"] > 0 else ""
            lines.append(
                f"{r['variant']}{where}: paired differences vary with sd {fmt(r['sd_diff'])}, unpaired trials' "
                f"differences with sd {fmt(unpaired)} (seed-to-seed sd {fmt(r['sd'])} and {fmt(r['sd_baseline'])})"
                + ratio
            )
    if not lines or len(lines) > 12:
        return ""
    return (
        "<p class='note'>What pairing by data_seed bought:</p><ul>"
        + "".join(f"<li>{esc(l)}</li>" for l in lines)
        + "</ul>"
    )


def fidelity_section(study):
    """The study's research note beside this run, each difference with its reason: study.json's "fidelity", the
    table `study.run --dry-run` prints. None for a study.json without one."""
    f = study.meta.get("fidelity")
    if not isinstance(f, dict):
        return None
    rows = [r for r in f.get("rows") or [] if isinstance(r, dict)]
    body = []
    if rows:
        body.append(
            f"<p>The research note ({esc(f.get('note'))}) beside what this run trained: {len(rows)} aspects, "
            f"{sum(bool(r.get('reason')) for r in rows)} differ.</p>"
        )
    if f.get("text"):
        body.append(f"<p class='note'>{esc(f['text'])}</p>")
    if rows:
        rows = [dict(r, reason=r.get("reason") or "same as the note") for r in rows]
        body.append(
            table(
                rows,
                ["aspect", "note", "this_run", "reason"],
                ["aspect", "the note", "this run", "why they differ"],
                sortable=False,
            )
        )
    return "".join(body) or None


def stats_section(study, res, figs):
    keys = ["variant"] + (["budget"] if res["groups"] and "budget" in res["groups"][0] else [])
    body = [f"<p class='note'>{esc(res['test'])}</p>"]
    if "configs" in figs:
        body.append(figure_div(figs["configs"]))
    if single_run_search(study, res):
        body.append(
            "<p class='muted'>A search without seeds runs each config once: no interval per config. The Optuna "
            "search section shows the trials against each searched key.</p>"
        )
    else:
        body.append("<h3>Per config</h3>")
        body.append(
            table(
                res["groups"],
                keys + ["n", "mean", "std", "ci_low", "ci_high"],
                keys + ["n", f"mean {res['metric']}", "std", "95% CI low", "95% CI high"],
            )
        )
    if res.get("baseline"):
        body.append(f"<h3>Difference from the baseline ({esc(res['baseline'])})</h3>")
        if "differences" in figs:
            body.append(figure_div(figs["differences"]))
        cols = ["variant"] + keys[1:] + ["test", "n", "n_baseline", "n_pairs", "diff", "ci_low", "ci_high"]
        cols += ["p_value", "p_holm", "verdict", "sd", "sd_baseline", "sd_diff"]
        headers = cols[:-3] + ["seed-to-seed sd", "baseline's seed-to-seed sd", "sd of paired differences"]
        body.append(table(res["comparisons"], cols, headers))
        body.append(pairing_note(res["comparisons"]))
    else:
        body.append("<p class='muted'>No baseline variant named (study.json 'baseline'): no differences computed.</p>")
    th = res.get("threshold")
    if th:
        body.append(f"<h3>The {esc(percent(th['threshold']))} threshold</h3><p class='note'>{esc(th['rule'])}.</p>")
        cols = ["variant"] + keys[1:] + ["n", "n_baseline", "ratio", "ci_low", "ci_high", "verdict"]
        body.append(table(th["arms"], cols))
    return "".join(body)


def frontier_section(study, res, figs):
    body = (
        [figure_div(figs["frontier"])]
        if "frontier" in figs
        else ["<p class='muted'>No finished trial with a parameter count.</p>"]
    )
    body.append(
        "<p class='note'>Every finished trial is a point; the dotted line is the Pareto front "
        "(no other trial is both smaller and better). Training FLOPs = flops_per_token x tokens_trained.</p>"
    )
    rows = [
        dict(
            variant=variant,
            N=x,
            E=f["E"],
            E_ci=f["E_ci"],
            A=f["A"],
            A_ci=f["A_ci"],
            alpha=f["alpha"],
            alpha_ci=f["alpha_ci"],
            n=f["n"],
            budgets=f["n_levels"],
            rmse=f["rmse"],
            method=f["method"],
        )
        for variant, by_x in res.get("fits", {}).items()
        for x, f in by_x.items()
    ]
    if rows:
        body.append("<h3>Power-law fits L(N) = E + A N<sup>-alpha</sup></h3>")
        body.append(
            f"<p class='note'>Least squares per variant; {esc(rows[0]['method'])}, 95% intervals. "
            "Drawn as lines on the frontier.</p>"
        )
        body.append(table(rows, [k for k in rows[0] if k != "method"]))
    if res["pareto"].get("params_total"):
        body.append(f"<p>On the front (total parameters): {esc(', '.join(res['pareto']['params_total']))}</p>")
    return "".join(body)


def samples_html(study, variants):
    """One column per variant: the first trial's samples (lowest seed)."""
    t = study.trials
    cols = []
    for v in variants:
        names = t[(t["variant"] == v) & t["trial"].isin(list(study.samples))].sort_values("seed")["trial"]
        if names.empty:
            continue
        s = study.samples[names.iloc[0]]
        samples = s.get("samples", []) if isinstance(s, dict) else []
        items = "".join(f"<pre>{esc(str(x)[:MAX_SAMPLE_CHARS])}</pre>" for x in samples[:MAX_SAMPLES])
        prompt = esc(s.get("prompt", "")) if isinstance(s, dict) else ""
        cols.append(
            f"<div class='sample-col'><h4>{esc(v)} <span class='muted'>({esc(names.iloc[0])})</span></h4>"
            f"<p class='muted'>prompt: <code>{prompt}</code></p>{items}</div>"
        )
    return f"<div class='samples'>{''.join(cols)}</div>" if cols else ""


# -----------------------------------------------------------------------------
# What each report view adds to the page (reports/sections.py registers them): HTML, or None for nothing


def nanohead_html(study, res, figs):
    if "nanohead" not in figs:
        return None
    return (
        "<h3>Nano-head proportion</h3>"
        + figure_div(figs["nanohead"])
        + table(res["nanohead"], ["nanohead_proportion", "nanohead_share_achieved", "n", "mean", "ci_low", "ci_high"])
    )


def softmax1_summary(res):
    s = res.get("softmax1")
    if not s:
        return []
    return [
        f"softmax1: perplexity ratio {s['treatment']} / {s['baseline']} = {s['ratio']:.4f}, "
        f"95% CI {ci_text(s['ci_low'], s['ci_high'])}: {s['verdict']}"
    ]


def softmax1_html(study, res, figs):
    s = res.get("softmax1")
    if not s:
        return None
    body = [
        f"<h3>softmax1 vs softmax: the pre-registered {esc(percent(1 - s['threshold']))} criterion</h3>",
        f"<p class='verdict'>perplexity ratio {esc(s['treatment'])} / {esc(s['baseline'])} = "
        f"{esc(fmt(s['ratio']))}, 95% CI {esc(ci_text(s['ci_low'], s['ci_high']))} "
        f"(n = {s['n']} vs {s['n_baseline']}): <b>{esc(s['verdict'])}</b></p>",
        "<p class='note'>Perplexity = e<sup>val_loss</sup> with the loss in nats, so the ratio is "
        "e<sup>loss difference</sup>. The note's 2<sup>loss</sup> gives the same ratio only for a loss in "
        "bits: applied to nats it moves the ratio towards 1 (a difference of -0.06 nats: 2<sup>-0.06</sup> "
        "= 0.959, where the perplexities' ratio is e<sup>-0.06</sup> = 0.942). With seeds the ratio is "
        "exp(mean loss difference), its interval exp of the Welch interval.</p>",
    ]
    if "softmax1" in figs:
        body.append(figure_div(figs["softmax1"]))
    body.append(
        "<h3>Samples</h3>"
        + (samples_html(study, [s["baseline"], s["treatment"]]) or "<p class='muted'>no samples.json</p>")
    )
    return "".join(body)


def toeplitz_html(study, res, figs):
    rows = res.get("toeplitz")
    if not rows:
        return None
    body = ["<h3>Toeplitz mixer: mean x projection</h3>" + toeplitz_grid(rows)]
    shown = [c for c in TOEPLITZ_METRICS if not c.startswith("gen_mean_time")]
    cols = ["variant", "toep_mean", "toep_proj", "n"] + [c for c in shown if any(c in r for r in rows)]
    body.append(table(rows, [c for c in cols if c == "variant" or any(c in r for r in rows)]))
    if "toeplitz" in figs:
        body.append(figure_div(figs["toeplitz"]))
    if "toeplitz_filters" in figs:
        body.append(
            "<h3>Learned filters</h3><p class='muted'>Each head's weights over lags (after the mean's "
            "normalisation where toep_mean); rf = the lag holding 90% of the mass (trainables/probes.py).</p>"
        )
        body.append(figure_div(figs["toeplitz_filters"]))
    return "".join(body)


def vocab_depth_html(study, res, figs):
    rows = res.get("vocab_depth")
    if not rows:
        return None
    body = ["<h3>Vocabulary vs depth candidates</h3>"]
    if "vocab_depth" in figs:
        body.append(figure_div(figs["vocab_depth"]))
    cols = [
        c
        for c in (
            "variant",
            "vocab_size",
            "n_layer",
            "n_embd",
            "tie_embeddings",
            "budget",
            "params_total",
            "share_embedding",
            "share_lm_head",
            "share_blocks",
            "n",
            "mean",
            "ci_low",
            "ci_high",
        )
        if c in rows[0]
    ]
    body.append(table(rows, cols))
    return "".join(body)


def toeplitz_grid(rows):
    """The 2x2: eval loss with toep_mean down, toep_proj across."""
    by = {(str(r.get("toep_mean")).lower(), str(r.get("toep_proj")).lower()): r for r in rows}
    if not any(k[0] in ("true", "false") for k in by):
        return ""
    out = ["<table class='grid'><tr><th></th><th>proj</th><th>no proj</th></tr>"]
    for mean, label in (("true", "mean"), ("false", "no mean")):
        out.append(f"<tr><th>{label}</th>")
        for proj in ("true", "false"):
            r = by.get((mean, proj))
            if r is None or "val_loss" not in r:
                out.append("<td class='muted'>-</td>")
            else:
                out.append(
                    f"<td>{esc(r['variant'])}<br>eval loss {esc(fmt(r['val_loss']))}<br>"
                    f"<span class='muted'>{esc(ci_text(*r['val_loss_ci']))}</span></td>"
                )
        out.append("</tr>")
    return "".join(out) + "</table>"


def optuna_html(study, res, figs):
    o = res.get("optuna")
    if not o:
        return None
    body = [
        f"<p>Optuna study {esc(o['name'])}: {o['n_trials']} trials, directions {esc(', '.join(o['directions']))}. "
        "The figures are optuna.visualization's. A trial ASHA stopped enters the Optuna study with its value where "
        "it stopped (Ray's OptunaSearch), so these views show it at that early value.</p>"
    ]
    if "optuna_history" in figs:
        body.append(figure_div(figs["optuna_history"]))
    imp = o.get("importances") or []
    if imp:
        body.append("<h3>Parameter importances</h3>")
        body.append(
            f"<p class='note'>fANOVA (Optuna's FanovaImportanceEvaluator) fits a random forest to the trials and "
            f"splits the variance of {esc(study.metric)} among the keys; each fit sums to 1. One fit's numbers "
            f"move with the forest's seed (optuna#2757), so this is the mean ± sd over {imp[0]['fits']} fits with "
            f"seeds 0..{imp[0]['fits'] - 1}: an sd near the mean says the trials do not settle the ranking.</p>"
        )
        if "optuna_importances" in figs:
            body.append(figure_div(figs["optuna_importances"]))
        body.append(
            table(imp, ["param", "mean", "sd", "min", "max", "fits"], ["key", "mean", "sd", "min", "max", "fits"])
        )
    if o.get("importance_note"):
        body.append(f"<p class='muted'>{esc(o['importance_note'])}</p>")
    for k, title in (
        ("optuna_parallel", "Parallel coordinates"),
        ("optuna_slice", "Each searched key (slice)"),
        ("optuna_contour", "The two most important keys (contour)"),
        ("optuna_pareto", "Pareto front"),
    ):
        if k in figs:
            body.append(f"<h3>{esc(title)}</h3>" + figure_div(figs[k]))
        if k == "optuna_slice" and k in figs:
            body.append(
                "<p class='note'>Each slice panel shows every complete trial against one key while the others "
                "differ too: the colour is the trial number, the hover text the trial's whole config.</p>"
            )
    body.append(search_leaders_html(o, res["metric"], res["mode"]))
    return "".join(body)


def audit_section(res):
    """The pruning audit: what ASHA's stops cost, from the trials it was not allowed to stop."""
    a = res.get("pruning_audit")
    if not a:
        return None
    body = [
        f"<p>{a['n_audited']} of {a['n_trials']} trials were audited (audit_fraction {esc(fmt(a['audit_fraction']))}"
        "): drawn at random, seeded by the study's seed, and never stopped by ASHA; their results still count "
        "towards the rungs' cut-offs. ASHA rungs (training_iteration = evals reported): "
        f"{esc(', '.join(map(str, a['milestones'])) or 'none before the last eval')}, reduction factor "
        f"{esc(fmt(a['reduction_factor']))}.</p>"
    ]
    if a.get("too_few"):
        return "".join(body) + f"<p class='verdict'>{esc(a['too_few'])}</p>"
    body.append(
        f"<p class='note'>Per rung: Kendall's tau between the audited trials' {esc(res['metric'])} at the rung and at "
        f"the end (1: the rung ranks them as the end does). Would stop: audited trials below the rung's cut-off, "
        f"ASHA's rule over every trial's value there (worse than the best 1/{esc(fmt(a['reduction_factor']))}). "
        f"Chance: the share of those that end in the final top-{a['k']} of the {a['n_final']} trials that ran to "
        f"the end (k = n / reduction factor, rounded up), with a 95% Wilson interval: an estimate of the chance "
        f"that a config ASHA stopped there would have made the top-{a['k']}.</p>"
    )
    rows = [dict(r, ci=ci_text(r["ci_low"], r["ci_high"], 2) if r["would_stop"] else "") for r in a["rungs"]]
    body.append(
        table(
            rows,
            ["milestone", "n_at_rung", "n_audited", "tau", "tau_p", "would_stop", "in_top_k", "chance", "ci"],
            [
                "rung (iteration)",
                "trials there",
                "audited there",
                "Kendall's tau",
                "p",
                "would stop",
                f"of those in top-{a['k']}",
                f"chance of top-{a['k']}",
                "95% CI",
            ],
            sortable=False,
        )
        if rows
        else "<p class='muted'>ASHA has no rung before the last eval at this profile: it stopped nothing early.</p>"
    )
    body.append(
        f"<h3>Stopped more often than the final rank justifies?</h3><p class='note'>Each searched key's values in "
        f"thirds (a number) or one bin per value. For each bin: the share of its non-audited trials ASHA stopped, "
        f"beyond the study's {fmt(a['stopped_share'])}, minus the share of its audited trials that end in the "
        f"audited trials' bottom half, beyond {fmt(a['bottom_half_share'])}. A bin is flagged when that excess is "
        f"{FLAG_EXCESS:g} or more with at least {FLAG_MIN_STOPPABLE} stoppable and {FLAG_MIN_AUDITED} audited "
        "trials in it.</p>"
    )
    body += [f"<p class='deviation'>warning: {esc(f)}</p>" for f in a["flags"]] or [
        "<p>No bin is stopped far more often than its final rank justifies.</p>"
    ]
    body.append(
        table(
            a["bins"],
            ["key", "bin", "n_stoppable", "stopped_share", "n_audited", "bottom_half_share", "excess", "flagged"],
            ["key", "bin", "stoppable trials", "stopped", "audited", "audited in bottom half", "excess", "flagged"],
        )
    )
    return "".join(body)


def search_leaders_html(o, metric, mode):
    """The search's best configs (mean and 95% CI over each one's seeds, where it ran several), then the final
    recommendation: from the confirmation re-runs where they exist, else how to run them."""
    leaders, confirmed = o.get("leaders") or [], o.get("confirmation") or []
    stats = ["n", "mean", "ci_low", "ci_high"]
    cols = ["trial", "variant", *o.get("searched", []), metric, *stats]
    seeds = " (the mean over each trial's seeds; n, mean and 95% t-interval over them)"
    out = [
        f"<h3>Best configs</h3><p>The search's {len(leaders)} best finished trials by {esc(metric)}"
        f"{seeds if any('n' in r for r in leaders) else ''}.</p>",
        table(leaders, [c for c in cols if any(c in r for r in leaders)]),
        "<h3>Recommendation</h3>",
    ]
    if not confirmed:
        out.append(
            "<p>No confirmation runs: each config above was measured in one search trial, and the best of many "
            "draws is flattered by its noise. To re-run the leaders with more seeds, run the search with "
            "<code>--set confirm_top=3 --set confirm_seeds=5</code>.</p>"
        )
        return "".join(out)
    best = confirmed[0]
    interval = ci_text(best.get("ci_low"), best.get("ci_high"))
    out.append(
        f"<p>Confirmed with {esc(best.get('n', 1))} seeds each, the best config is {esc(best['confirm_of'])} "
        f"({esc(best['variant'])}): {esc(metric)} {esc(fmt(best[metric]))}, 95% interval {esc(interval)} "
        f"({'lower' if mode == 'min' else 'higher'} is better).</p>"
    )
    out.append(table(confirmed, [c for c in ["confirm_of", *cols] if any(c in r for r in confirmed)]))
    return "".join(out)


def probes_section(study, res, figs):
    if not res.get("probes"):
        return None
    return figure_div(figs["probes"]) + table(res["probes"], ["probe", "variant", "n", "mean", "ci_low", "ci_high"])


def failures_section(res):
    rows = res["failures"]
    if not rows:
        return "<p>Every trial finished.</p>"
    out = [
        "<table class='sortable'><thead><tr><th>trial</th><th>variant</th><th>status</th><th>reason</th></tr></thead><tbody>"
    ]
    for r in rows:
        err = r["error"] or "(no reason recorded)"
        first, _, rest = err.strip().partition("\n")
        reason = f"<details><summary>{esc(first)}</summary><pre>{esc(rest)}</pre></details>" if rest else esc(first)
        out.append(
            f"<tr><td>{esc(r['trial'])}</td><td>{esc(r['variant'])}</td><td>{esc(r['status'])}</td><td>{reason}</td></tr>"
        )
    return "".join(out) + "</tbody></table>"


def trials_section(study):
    t = study.trials
    probes = sorted(c for c in t.columns if c.startswith("probe_"))
    first = [c for c in TRIAL_COLUMNS if c in t and c != "error"]
    config = sorted(c for c in t.columns if c not in first and c not in probes and c not in ("error", "study"))
    cols = first + config + probes + (["error"] if "error" in t else [])
    rows = t[cols].to_dict(orient="records")
    for r in rows:  # an error in the table is its first line; the full text is under Failures
        if isinstance(r.get("error"), str):
            r["error"] = r["error"].strip().split("\n")[0][:300]
    return table(rows, cols, table_id="trials-table", filterable=True)


def environment_section(study):
    meta = scrub(study.meta)
    body = [
        kv_table(
            {
                k: meta.get(k)
                for k in (
                    "study",
                    "family",
                    "profile",
                    "title",
                    "hypothesis",
                    "note",
                    "seed_note",
                    "views",
                    "baseline",
                    "threshold",
                    "metric",
                    "mode",
                    "git_commit",
                    "started",
                    "ended",
                    "interrupted",
                )
                if k in meta
            }
        )
    ]
    for key, title in (
        ("environment", "Environment"),
        ("versions", "Package versions"),
        ("args", "Command-line arguments"),
    ):
        if isinstance(meta.get(key), dict):
            body.append(f"<h3>{title}</h3>" + kv_table(meta[key]))
    if study.envs:
        name = sorted(study.envs)[0]
        body.append(f"<h3>Trial environment <span class='muted'>({esc(name)}, env.json)</span></h3>")
        env = scrub(study.envs[name])
        body.append(kv_table(env) if isinstance(env, dict) else f"<pre>{esc(json.dumps(env, default=str))}</pre>")
    return "".join(body)


# -----------------------------------------------------------------------------
# The page

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#eceff1;padding:16px 28px}header h1{margin:0 0 6px;font-size:22px}
header p{margin:2px 0;color:#b0bec5}nav a{color:#80cbc4;margin-right:14px;text-decoration:none}
main{padding:8px 28px 40px;max-width:1600px}section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;
margin:18px 0;padding:6px 18px 14px}h2{font-size:18px;border-bottom:1px solid #eee;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.muted{color:#888}.note{color:#555;font-size:13px}.verdict{font-size:15px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}th,td{border:1px solid #e3e3e3;padding:3px 7px;
text-align:left;vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#f2f4f5;position:sticky;top:0;cursor:pointer;white-space:nowrap}
table.kv th{background:#f7f7f7;width:200px}.scroll{max-height:640px;overflow:auto}
input.filter{width:420px;padding:5px;margin:6px 0}
.samples{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:14px}
.sample-col pre,section pre{white-space:pre-wrap;background:#f6f8fa;padding:8px;border-radius:4px;font-size:12px}
table.grid td,table.grid th{padding:8px 14px;text-align:center}
.deviation{color:#b71c1c}p.methods{max-width:900px;line-height:1.6}
"""

# Sorting (click a header; numbers by data-v) and filtering (every word must appear in the row).
JS = """
(function(){
  function key(td){var v=td.getAttribute('data-v');return (v!==null&&v!=='')?Number(v):td.textContent.toLowerCase();}
  function cmp(a,b){var na=typeof a==='number',nb=typeof b==='number';
    if(na&&nb)return a-b; if(na)return -1; if(nb)return 1; if(a==='')return 1; if(b==='')return -1;
    return a<b?-1:a>b?1:0;}
  document.querySelectorAll('table.sortable').forEach(function(table){
    var ths=table.tHead?table.tHead.rows[0].cells:[];
    Array.prototype.forEach.call(ths,function(th,i){th.addEventListener('click',function(){
      var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows),dir=th.dataset.dir==='asc'?-1:1;
      th.dataset.dir=dir===1?'asc':'desc';
      rows.sort(function(a,b){return dir*cmp(key(a.cells[i]),key(b.cells[i]));});
      rows.forEach(function(r){body.appendChild(r);});});});});
  document.querySelectorAll('input.filter').forEach(function(input){
    var table=document.getElementById(input.dataset.table);
    input.addEventListener('input',function(){
      var words=input.value.toLowerCase().split(/\\s+/).filter(Boolean);
      Array.prototype.forEach.call(table.tBodies[0].rows,function(r){
        var text=r.textContent.toLowerCase();
        r.style.display=words.every(function(w){return text.indexOf(w)>=0;})?'':'none';});});});
})();
"""


def render(study, res, figs, pngs=()):
    from reports.plan import methods_html, plan_html, sequential_html  # here: plan.py imports this module
    from reports.sections import study_sections  # here: sections.py imports this module

    meta = study.meta
    views, _ = study_sections(study)
    sections = [
        ("summary", "Summary", summary(study, res, views)),
        ("frontier", "Loss vs parameters and compute", frontier_section(study, res, figs)),
        ("stats", "Seeds, intervals and differences", stats_section(study, res, figs)),
    ]
    rounds = sequential_html(study)
    if rounds:  # beside the differences it decided
        sections.append(("sequential", "Sequential seeding: each arm's seeds and why it stopped", rounds))
    audit = audit_section(res)
    fidelity = fidelity_section(study)
    if fidelity:  # right after the summary: what the numbers below are numbers of
        sections.insert(1, ("fidelity", "Note vs this run", fidelity))
    sections.insert(0, ("plan", "The plan, registered before the first trial", plan_html(study)))
    for name, view in views.items():
        body = view.html(study, res, figs) if view.html else None
        if body:
            sections.append((f"view-{name}", view.title, body))
    if audit:
        sections.append(("audit", "Pruning audit", audit))
    body = probes_section(study, res, figs)
    if body:
        sections.append(("probes", "Probes", body))
    if "curves" in figs:
        sections.append(("curves", "Training curves", figure_div(figs["curves"])))
    if study.samples and not any(view.shows_samples for view in views.values()):
        variants = sorted_variants(study.trials["variant"], study.baseline)[:6]
        sections.append(("samples", "Samples", samples_html(study, variants)))
    sections += [
        ("failures", f"Failures ({len(res['failures'])})", failures_section(res)),
        ("trials", f"Trials ({len(study.trials)})", trials_section(study)),
        ("environment", "Environment", environment_section(study)),
    ]
    if res["warnings"]:
        sections.append(
            ("warnings", "Warnings", "<ul>" + "".join(f"<li>{esc(w)}</li>" for w in res["warnings"]) + "</ul>")
        )
    if pngs:
        links = " ".join(f"<a href='{esc(p.name)}'>{esc(p.name)}</a>" for p in pngs)
        sections.append(("static", "Static figures", f"<p>{links}</p>"))
    sections.append(("methods", "Methods", methods_html(study)))  # last: the paragraph to paste into a paper
    ended = meta.get("ended")
    status = (
        f"ended {ended}"
        if ended
        else "no end time: the study is running or was cut short; this report shows what it has"
    )
    nav = "".join(f"<a href='#{esc(sid)}'>{esc(title)}</a>" for sid, title, _ in sections)
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{esc(study.name)}: study report</title><style>{CSS}</style>",
            # plotly.js once, inline: the page needs no network, so it works from file:// offline
            f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script></head><body>",
            f"<header><h1>Study {esc(study.name)}</h1>",
            f"<p>{esc(study.title)}</p>" if study.title != study.name else "",
            f"<p>family {esc(study.family or 'unknown')} &middot; views {esc(', '.join(study.views) or 'none')} "
            f"&middot; profile {esc(meta.get('profile') or 'unknown')} &middot; "
            f"metric {esc(study.metric)} ({esc(study.mode)}) &middot; started {esc(meta.get('started') or 'unknown')} &middot; "
            f"{esc(status)}</p>",
            f"<p>hypothesis: {esc(meta['hypothesis'])}</p>" if meta.get("hypothesis") else "",
            f"<p>note: {esc(study.note)}</p>" if study.note else "",
            f"<p>report generated {esc(generated)}</p><nav>{nav}</nav></header><main>",
            "".join(section(sid, title, body) for sid, title, body in sections),
            f"</main><script>{JS}</script></body></html>",
        ]
    )


def scaling_flops_summary(res):
    s = res.get("scaling_flops")
    if not s:
        return []
    words = s["sentences"]
    return [f"held-out budget, {arm}: {text}" for arm, text in words["held_out"].items()] + [
        f"crossover: {text}" for text in words["crossover"].values()
    ]


def scaling_flops_html(study, res, figs):
    """A compute-matched scaling study: the isoFLOP figure, the fitted parameters with intervals, N*(C), and the
    held-out and crossover sentences."""
    s = res.get("scaling_flops")
    if not s:
        return None
    words = s["sentences"]
    conf = f"{s['confidence']:.0%}"
    body = [
        "<h3>Compute-matched scaling: L(N, D) = E + A / N<sup>&alpha;</sup> + B / D<sup>&beta;</sup></h3>",
        f"<p class='note'>Fitted per arm as Besiroglu et al. (2024) replicate Chinchilla's approach 3: log L = "
        f"LSE(a - &alpha; log N, b - &beta; log D, e), Huber loss (&delta; = 10<sup>-3</sup>) on log L, L-BFGS-B from "
        f"the 8 best of Chinchilla's 4,500 starting points, the best minimum kept; &alpha; and &beta; kept in "
        f"[0.01, 4]. N = all parameters, D = tokens trained, L = {esc(s['metric'])}, C = 6ND. {conf} intervals: "
        f"{s['n_boot']} bootstrap resamples of the design's cells (budget x size, both arms together), each "
        f"resample's fit started from the full fit's minimum. "
        f"N*(C) = G (C/6)<sup>&beta;/(&alpha;+&beta;)</sup>, G = (&alpha;A / &beta;B)<sup>1/(&alpha;+&beta;)</sup>."
        "</p>",
    ]
    if "scaling_flops" in figs:
        body.append(figure_div(figs["scaling_flops"]))
    rows = []
    for arm, e in s["arms"].items():
        if "params" not in e:
            rows.append(dict(arm=arm, n=e["n"], note=e.get("note", "")))
            continue
        row = dict(arm=arm, n=e["n"])
        for k, p in e["params"].items():
            row[k] = p["value"]
            row[f"{k} {conf}"] = p["ci"]
        row["note"] = words["identification"].get(arm, "")
        rows.append(row)
    cols = ["arm", "n"] + [c for k in ("E", "A", "B", "alpha", "beta") for c in (k, f"{k} {conf}")] + ["note"]
    body += ["<h4>Fitted parameters</h4>", table(rows, cols)]
    opt = [
        dict(
            arm=arm,
            C=o["C"],
            measured="yes" if o["measured"] else "extrapolated",
            N_star=o["N"],
            N_star_ci=o["N_ci"],
            D_star=o["C"] / (6 * o["N"]),
            L_star=o["L"],
            L_star_ci=o["L_ci"],
        )
        for arm, e in s["arms"].items()
        for o in e.get("optimal", [])
    ]
    body += [
        "<h4>Compute-optimal size N*(C)</h4>",
        table(
            opt,
            ["arm", "C", "measured", "N_star", "N_star_ci", "D_star", "L_star", "L_star_ci"],
            ["arm", "C (FLOPs)", "budget", "N*", f"N* {conf}", "D* = C / 6N*", "L*", f"L* {conf}"],
        ),
    ]
    body.append("<h4>Held-out budget</h4>")
    body.append(
        "<p class='note'>Refitted on every budget but the largest, each trial of the largest predicted with a "
        f"{conf} bootstrap prediction interval (refits on resampled cells, times a resampled residual). The verdict "
        "is on the held-out budget's best size (its lowest measured loss): inside its interval, the fit "
        "extrapolates.</p>"
    )
    for arm, text in words["held_out"].items():
        body.append(f"<p class='verdict'><b>{esc(arm)}</b>: {esc(text)}</p>")
        h = s["arms"][arm]["held_out"]
        body.append(
            table(
                [{**t, "interval": [t["lo"], t["hi"]]} for t in sorted(h["trials"], key=lambda t: t["N"])],
                ["N", "D", "measured", "predicted", "interval", "inside"],
            )
        )
    body.append("<h4>Crossover</h4>")
    for text in words["crossover"].values() or []:
        body.append(f"<p class='verdict'>{esc(text)}</p>")
    if not words["crossover"]:
        body.append("<p class='muted'>no variant with a fit beside a baseline with one</p>")
    return "".join(body)
