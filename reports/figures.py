"""
The report's figures, as plotly Figures built from a Study and its analysis dict,
and their static PNG export (kaleido driving the system's Chromium).

Every function returns a Figure or None when the study has nothing to draw for it.
Text that comes from the study (variant and trial names) goes through esc(): plotly
renders a subset of HTML in labels and hover text, and a name is data, not markup.
"""

import html
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports.analyse import pareto_front, power_law, single_run_search, sorted_variants
from trainables.storage import write_atomic

MANY_VARIANTS = 24  # beyond this, one colour for all trials and the variant in the hover text only
PALETTE = plotly.colors.qualitative.Plotly + plotly.colors.qualitative.Dark24
VERDICT_COLOURS = {
    "better": "#2ca02c",
    "worse": "#d62728",
    "within noise": "#7f7f7f",
    "within noise after Holm correction": "#b8a040",
}
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), legend=dict(groupclick="togglegroup"))
# static export size per figure (layout pixels); the HTML figures fill the page width instead
PNG_SIZE = {"frontier": (1500, 520), "curves": (1300, 480), "toeplitz": (1300, 700), "scaling_flops": (1400, 560)}


def esc(s):
    return html.escape(str(s))


def fmt(v, digits=4):
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def variant_colours(study):
    """One colour per variant for the whole report, in the order of the legend (baseline first)."""
    variants = sorted_variants(study.trials["variant"], study.baseline)
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(variants)}


def _done(study):
    t, m = study.trials, study.metric
    if m not in t:
        return t.iloc[:0]
    return t[(t["status"] == "done") & t[m].notna()]


def _by_variant(df, variants):
    """(name, rows) per variant; a single group when there are too many variants to colour."""
    if len(variants) > MANY_VARIANTS:
        return [("trials", df)]
    return [(v, df[df["variant"] == v]) for v in variants if (df["variant"] == v).any()]


def _ci_error(rows, mean="mean", lo="ci_low", hi="ci_high"):
    """error_y dict from rows with mean and interval; rows without an interval get no bar."""
    plus = [r[hi] - r[mean] if _finite(r[hi]) else None for r in rows]
    minus = [r[mean] - r[lo] if _finite(r[lo]) else None for r in rows]
    return dict(type="data", array=plus, arrayminus=minus, visible=True)


def _finite(v):
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


# -----------------------------------------------------------------------------
# Every study


def frontier(study, res):
    """Metric vs total params, non-embedding params and training FLOPs; Pareto fronts; power-law fits."""
    done, m = _done(study), study.metric
    panels = [
        (x, label)
        for x, label in (
            ("params_total", "total parameters"),
            ("params_non_embedding", "non-embedding parameters"),
            ("train_flops", "training FLOPs"),
        )
        if x in done and (done[x] > 0).any()
    ]
    if done.empty or not panels:
        return None
    variants = sorted_variants(done["variant"], study.baseline)
    colours = variant_colours(study)
    fig = make_subplots(
        rows=1,
        cols=len(panels),
        shared_yaxes=True,
        horizontal_spacing=0.03,
        subplot_titles=[f"{m} vs {label}" for _, label in panels],
    )
    sign = 1 if study.mode == "min" else -1
    for col, (x, label) in enumerate(panels, 1):
        first = col == 1
        for name, g in _by_variant(done, variants):
            fig.add_trace(
                go.Scatter(
                    x=g[x],
                    y=g[m],
                    mode="markers",
                    name=esc(name),
                    legendgroup=name,
                    showlegend=first,
                    marker=dict(color=colours.get(name, "#1f77b4"), size=8, opacity=0.8),
                    text=[f"{esc(t)}<br>variant {esc(v)}" for t, v in zip(g["trial"], g["variant"])],
                    hovertemplate=f"%{{text}}<br>{label} %{{x:.4s}}<br>{m} %{{y:.4f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        front = done[pareto_front(done[x], sign * done[m])].sort_values(x)
        fig.add_trace(
            go.Scatter(
                x=front[x],
                y=front[m],
                mode="lines",
                line=dict(shape="hv", color="black", dash="dot", width=1.5),
                name="Pareto front",
                legendgroup="pareto",
                showlegend=first,
                hoverinfo="skip",
            ),
            row=1,
            col=col,
        )
        for variant, fits in res.get("fits", {}).items():
            f = fits.get(x)
            if not f:
                continue
            n = np.geomspace(f["n_min"], f["n_max"], 100)
            fig.add_trace(
                go.Scatter(
                    x=n,
                    y=power_law(n, f),
                    mode="lines",
                    line=dict(color=colours.get(variant, "#444"), width=2),
                    name=esc(f"{variant}: fit E + A N^-alpha"),
                    legendgroup=variant,
                    showlegend=first,
                    hovertemplate=esc(f"{variant}: E={f['E']:.3f} A={f['A']:.3g} alpha={f['alpha']:.3f}")
                    + "<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(type="log", title_text=label, exponentformat="SI", row=1, col=col)
    fig.update_yaxes(title_text=m, row=1, col=1)
    fig.update_layout(**LAYOUT, height=480)
    return fig


def configs(study, res):
    """Mean and 95% interval of the metric per config, every trial shown beside it."""
    groups, m = res.get("groups", []), study.metric
    if not groups or len(groups) > 200 or single_run_search(study, res):
        return None
    done = _done(study)
    fig = go.Figure()
    if "budget" in groups[0]:
        variants = sorted_variants([g["variant"] for g in groups], study.baseline)
        colours = variant_colours(study)
        for v in variants:
            rows = [g for g in groups if g["variant"] == v]
            fig.add_trace(
                go.Scatter(
                    x=[r["budget"] for r in rows],
                    y=[r["mean"] for r in rows],
                    name=esc(v),
                    mode="lines+markers",
                    error_y=_ci_error(rows),
                    marker=dict(color=colours[v]),
                )
            )
        fig.update_xaxes(type="log", title_text="budget (target parameters)", exponentformat="SI")
    else:
        names = [esc(g["variant"]) for g in groups]
        fig.add_trace(
            go.Scatter(
                x=done["variant"].map(esc),
                y=done[m],
                mode="markers",
                name="trials",
                marker=dict(color="#bbbbbb", size=6),
                text=done["trial"].map(esc),
                hovertemplate="%{text}<br>%{y:.4f}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=names,
                y=[g["mean"] for g in groups],
                mode="markers",
                name="mean, 95% CI",
                error_y=_ci_error(groups),
                marker=dict(color="#1f77b4", size=11, symbol="diamond"),
            )
        )
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=names, title_text="variant")
    fig.update_yaxes(title_text=m)
    fig.update_layout(**LAYOUT, height=420, title=f"{m}: mean and 95% interval per config")
    return fig


def differences(study, res):
    """Each variant minus the baseline, with its interval, coloured by verdict (a forest plot)."""
    rows = res.get("comparisons", [])
    if not rows or len(rows) > 200:
        return None
    labels = [esc(r["variant"] + (f" @ {r['budget']:.3g}" if "budget" in r else "")) for r in rows]
    fig = go.Figure()
    for verdict in dict.fromkeys(r["verdict"] for r in rows):
        idx = [i for i, r in enumerate(rows) if r["verdict"] == verdict]
        sub = [rows[i] for i in idx]
        fig.add_trace(
            go.Scatter(
                x=[r["diff"] for r in sub],
                y=[labels[i] for i in idx],
                mode="markers",
                name=esc(verdict),
                marker=dict(size=10, color=VERDICT_COLOURS.get(verdict, "#bbbbbb")),
                error_x=_ci_error(sub, mean="diff"),
                text=[
                    f"p = {fmt(r['p_value'], 3)}, Holm p = {fmt(r['p_holm'], 3)}, n = {r['n']} vs {r['n_baseline']}, "
                    f"{'paired t, ' + str(r['n_pairs']) + ' pairs' if r.get('test') == 'paired t' else 'Welch'}"
                    for r in sub
                ],
                hovertemplate="%{y}: %{x:+.4f}<br>%{text}<extra></extra>",
            )
        )
    fig.add_vline(x=0, line=dict(color="black", width=1))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=labels[::-1])
    fig.update_xaxes(
        title_text=esc(f"{study.metric} difference from {res['baseline']} (95% interval, paired t or Welch)"),
        tickformat=".3~g",
    )  # plain decimals: "-800μ" bpb reads badly
    fig.update_layout(
        **LAYOUT, height=max(260, 60 + 40 * len(rows)), title=esc(f"Difference from the baseline {res['baseline']}")
    )
    return fig


def _gapped(g, cols):
    """A variant's trials as one trace: lines joined with a None between trials (1,000 traces would crawl).
    Rows of one trial are contiguous, as read_curves wrote them."""
    codes = pd.factorize(g["trial"])[0]
    breaks = np.flatnonzero(np.diff(codes) != 0) + 1
    return [np.insert(g[c].to_numpy(dtype=object), breaks, None) for c in cols]


def curves(study, res):
    """Training loss and validation metric against tokens seen, one line per trial."""
    c = study.curves
    if c.empty or "tokens" not in c:
        return None
    panels = [k for k in ("train_loss", study.metric) if k in c and c[k].notna().any()]
    if not panels:
        return None
    variants = sorted_variants(c["variant"], study.baseline)
    colours = variant_colours(study)
    fig = make_subplots(
        rows=1, cols=len(panels), subplot_titles=[f"{k} vs tokens" for k in panels], horizontal_spacing=0.07
    )
    for col, k in enumerate(panels, 1):
        for name, g in _by_variant(c[c[k].notna() & c["tokens"].notna()], variants):
            xs, ys, texts = _gapped(g, ["tokens", k, "trial"])
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    text=[esc(t) if t else "" for t in texts],
                    mode="lines",
                    name=esc(name),
                    legendgroup=name,
                    showlegend=col == 1,
                    line=dict(color=colours.get(name, "#1f77b4"), width=1.2),
                    opacity=0.8,
                    hovertemplate="%{text}<br>tokens %{x:.3s}<br>%{y:.4f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="tokens", row=1, col=col)
        fig.update_yaxes(title_text=k, row=1, col=col)
    fig.update_layout(**LAYOUT, height=440)
    return fig


def probes(study, res):
    """Every probe_* column as bars per variant with 95% intervals (generic: no knowledge of the probes)."""
    rows = res.get("probes", [])
    if not rows:
        return None
    names = list(dict.fromkeys(r["probe"] for r in rows))
    cols = min(3, len(names))
    fig = make_subplots(rows=math.ceil(len(names) / cols), cols=cols, subplot_titles=[esc(n) for n in names])
    for i, p in enumerate(names):
        sub = [r for r in rows if r["probe"] == p]
        fig.add_trace(
            go.Bar(
                x=[esc(r["variant"]) for r in sub],
                y=[r["mean"] for r in sub],
                error_y=_ci_error(sub),
                name=esc(p),
                showlegend=False,
                marker_color=PALETTE[i % len(PALETTE)],
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_layout(**LAYOUT, height=320 * math.ceil(len(names) / cols))
    return fig


# -----------------------------------------------------------------------------
# Per report view (reports/sections.py registers them)


def nanohead(study, res):
    """The note's plot: metric vs nano-head proportion, values written at the points. The x axis is the share the
    split achieved (p=0.2 builds 0.1875 at 512 wide) where the trials recorded it, else the requested one."""
    rows = res.get("nanohead")
    if not rows:
        return None
    done = _done(study)
    achieved = all("nanohead_share_achieved" in r for r in rows) and done["nanohead_share_achieved"].notna().all()
    x = "nanohead_share_achieved" if achieved else "nanohead_proportion"
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=done[x],
            y=done[study.metric],
            mode="markers",
            name="trials",
            marker=dict(color="#bbbbbb", size=6),
            text=done["trial"].map(esc),
            hovertemplate="%{text}<br>%{y:.4f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[r[x] for r in rows],
            y=[r["mean"] for r in rows],
            mode="lines+markers+text",
            text=[fmt(r["mean"]) for r in rows],
            textposition="top center",
            name="mean, 95% CI",
            error_y=_ci_error(rows),
            marker=dict(size=10, color="#1f77b4"),
        )
    )
    fig.update_xaxes(title_text="nano-head share of attention width" + (" (as built)" if achieved else " (requested)"))
    fig.update_yaxes(title_text=study.metric)
    fig.update_layout(**LAYOUT, height=440, title=f"{study.metric} vs nano-head proportion")
    return fig


def softmax1(study, res):
    """Perplexity per arm, and softmax1 / softmax perplexity against the pre-registered 0.95 line."""
    r = res.get("softmax1")
    if not r:
        return None
    done = study.trials[study.trials["status"] == "done"]
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.5, 0.5],
        horizontal_spacing=0.12,
        subplot_titles=[
            "validation perplexity (e^val_loss) per trial",
            esc(f"perplexity {r['treatment']} / {r['baseline']}, 95% interval"),
        ],
    )
    colours = variant_colours(study)
    for arm in (r["baseline"], r["treatment"]):
        g = done[done["variant"] == arm]
        fig.add_trace(
            go.Box(
                y=np.exp(g["val_loss"]),
                name=esc(arm),
                boxpoints="all",
                jitter=0.3,
                pointpos=0,
                marker_color=colours.get(arm),
                showlegend=False,
                text=g["trial"].map(esc),
            ),
            row=1,
            col=1,
        )
    ratio = [{"mean": r["ratio"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}]
    fig.add_trace(
        go.Scatter(
            x=[r["ratio"]],
            y=[0],
            mode="markers+text",
            text=[fmt(r["ratio"], 3)],
            textposition="top center",
            error_x=_ci_error(ratio),
            showlegend=False,
            marker=dict(size=12, color=colours.get(r["treatment"])),
        ),
        row=1,
        col=2,
    )
    fig.update_yaxes(visible=False, range=[-1, 1], row=1, col=2)
    fig.add_vline(
        x=r["threshold"],
        line=dict(color="#d62728", dash="dash"),
        row=1,
        col=2,
        annotation_text="pre-registered 5% line",
        annotation_position="bottom right",
    )
    fig.add_vline(x=1.0, line=dict(color="#7f7f7f"), row=1, col=2)
    fig.update_yaxes(title_text="perplexity", row=1, col=1)
    fig.update_layout(**LAYOUT, height=400)
    return fig


TOEPLITZ_METRICS = [
    ("val_loss", "eval loss"),
    ("wall_s", "training runtime (s)"),
    ("samples_per_s", "training samples/s"),
    ("gen_tokens_per_s_parallel", "generation tokens/s, parallel heads"),
    ("gen_tokens_per_s_sequential", "generation tokens/s, sequential heads"),
    ("gen_speedup", "generation speedup, parallel / sequential"),
]


def toeplitz(study, res):
    """The note's comparison plots: one bar chart per metric, the four variants side by side."""
    rows = res.get("toeplitz")
    metrics = [(k, label) for k, label in TOEPLITZ_METRICS if rows and any(_finite(r.get(k)) for r in rows)]
    if not metrics:
        return None
    cols, colours = 3, variant_colours(study)
    fig = make_subplots(
        rows=math.ceil(len(metrics) / cols), cols=cols, subplot_titles=[l for _, l in metrics], vertical_spacing=0.16
    )
    for i, (k, label) in enumerate(metrics):
        sub = [
            {
                "mean": r.get(k, math.nan),
                "ci_low": r.get(k + "_ci", [math.nan] * 2)[0],
                "ci_high": r.get(k + "_ci", [math.nan] * 2)[1],
            }
            for r in rows
        ]
        fig.add_trace(
            go.Bar(
                x=[esc(r["variant"]) for r in rows],
                y=[s["mean"] for s in sub],
                error_y=_ci_error(sub),
                marker_color=[colours.get(r["variant"]) for r in rows],
                showlegend=False,
                name=label,
                text=[f"{s['mean']:.4g}" if _finite(s["mean"]) else "" for s in sub],
                textposition="outside",
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_layout(**LAYOUT, height=330 * math.ceil(len(metrics) / cols))
    return fig


def vocab_depth(study, res):
    """Each candidate's parameters split into embedding / lm_head / blocks, beside its metric."""
    rows = res.get("vocab_depth")
    if not rows:
        return None
    names = [
        esc(r["variant"] + (f" @ {r['budget']:.3g}" if _finite(r.get("budget")) and "by_budget" in r else ""))
        for r in rows
    ]
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        column_widths=[0.6, 0.4],
        horizontal_spacing=0.03,
        subplot_titles=["share of parameters", f"{study.metric}, mean and 95% interval"],
    )
    for i, (part, label) in enumerate((("embedding", "embedding"), ("lm_head", "lm_head"), ("blocks", "blocks"))):
        shares = [r[f"share_{part}"] for r in rows]
        fig.add_trace(
            go.Bar(
                y=names,
                x=shares,
                orientation="h",
                name=label,
                marker_color=PALETTE[i],
                text=[f"{s:.0%}" if _finite(s) else "" for s in shares],
                textposition="inside",
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scatter(
            y=names,
            x=[r["mean"] for r in rows],
            mode="markers",
            error_x=_ci_error(rows),
            marker=dict(size=10, color="black"),
            name=study.metric,
        ),
        row=1,
        col=2,
    )
    fig.update_layout(**LAYOUT, barmode="stack", height=max(300, 80 + 40 * len(rows)))
    fig.update_xaxes(tickformat=".0%", range=[0, 1], row=1, col=1)
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=names[::-1])
    return fig


def _optuna_plot(study, draw, **kwargs):
    """One optuna.visualization figure of the study's Optuna study (its metric as the target of a multi-objective
    one), in the report's style, with every label and hover text escaped: they carry parameter values and names."""
    from optuna import visualization

    from reports.analyse import optuna_target

    o = study.optuna
    if not o or o["trials"].empty or not (o["trials"]["state"] == "complete").any():
        return None
    target, name = optuna_target(o, study.metric)
    try:
        fig = getattr(visualization, draw)(o["study"], target=target, target_name=name, **kwargs)
    except (ValueError, RuntimeError):  # e.g. a contour of a parameter that never varied
        return None
    for trace in fig.data:
        for attr in ("text", "hovertext"):
            value = getattr(trace, attr, None)
            if isinstance(value, str):
                setattr(trace, attr, _esc_hover(value))
            elif value is not None:
                setattr(trace, attr, [_esc_hover(v) if isinstance(v, str) else v for v in value])
    return fig


def _esc_hover(text: str) -> str:
    """optuna's hover text is JSON lines joined by <br>: escape each line, keep the breaks."""
    return "<br>".join(esc(html.unescape(line)) for line in text.split("<br>"))


def optuna_history(study, res):
    fig = _optuna_plot(study, "plot_optimization_history")
    return fig and fig.update_layout(**LAYOUT, height=420, title="Optimisation history")


def optuna_parallel(study, res):
    fig = _optuna_plot(study, "plot_parallel_coordinate")
    return fig and fig.update_layout(**{**LAYOUT, "margin": dict(l=80, r=80, t=80, b=40)}, height=460)


def optuna_slice(study, res):
    """One panel per searched key against the metric; colour is the trial number, the hover text the config."""
    fig = _optuna_plot(study, "plot_slice")
    if fig is None:
        return None
    t = study.optuna["trials"].set_index("number")
    params = [c for c in t.columns if c.startswith("param_")]

    def hover(n):  # optuna's slice has none: the trial's number, its value and its whole config
        r = t.loc[n]
        config = "<br>".join(esc(f"{c[len('param_') :]} = {fmt_value(r[c])}") for c in params)
        return f"trial {n}<br>{esc(study.metric)} {fmt(r['value_0'])}<br>{config}"

    for trace in fig.data:  # the feasible trials' markers are coloured by their trial numbers
        numbers = trace.marker.color
        if isinstance(numbers, (list, tuple)) and all(isinstance(n, (int, np.integer)) for n in numbers):
            trace.update(hovertext=[hover(int(n)) for n in numbers], hovertemplate="%{hovertext}<extra></extra>")
    return fig.update_layout(**LAYOUT, height=420, title=f"{study.metric} per searched key (slice)")


def fmt_value(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def optuna_contour(study, res):
    """The metric over the two most important keys (by mean fANOVA importance)."""
    imp = (res.get("optuna") or {}).get("importances") or []
    if len(imp) < 2:
        return None
    params = [imp[0]["param"], imp[1]["param"]]
    fig = _optuna_plot(study, "plot_contour", params=params)
    return fig and fig.update_layout(
        **LAYOUT, height=480, title=esc(f"{study.metric} over {params[0]} and {params[1]}")
    )


def optuna_importances(study, res):
    """fANOVA importances, mean and sd over fits with different seeds (one fit varies from call to call)."""
    imp = (res.get("optuna") or {}).get("importances") or []
    if not imp:
        return None
    items = imp[::-1]  # the most important at the top
    fig = go.Figure(
        go.Bar(
            x=[r["mean"] for r in items],
            y=[esc(r["param"]) for r in items],
            orientation="h",
            marker_color="#1f77b4",
            error_x=dict(type="data", array=[r["sd"] if _finite(r["sd"]) else None for r in items], visible=True),
            hovertemplate="%{y}: %{x:.3f} ± %{error_x.array:.3f}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text=f"importance (fANOVA, sums to 1), mean ± sd over {items[0]['fits']} seeds")
    fig.update_layout(**LAYOUT, height=max(260, 80 + 30 * len(items)), title="Parameter importances")
    return fig


def optuna_pareto(study, res):
    """Two-objective studies: optuna's Pareto front plot."""
    o = study.optuna
    if not o or len(o["directions"]) != 2 or not (o["trials"]["state"] == "complete").any():
        return None
    from optuna.visualization import plot_pareto_front

    names = o["study"].metric_names or [study.metric, "objective 1"]
    fig = plot_pareto_front(o["study"], target_names=[esc(n) for n in names])
    for trace in fig.data:
        if trace.hovertext is not None:
            trace.hovertext = [_esc_hover(v) if isinstance(v, str) else v for v in trace.hovertext]
    return fig.update_layout(**LAYOUT, height=460, title="Optuna Pareto front")


def toeplitz_filters(study, res):
    """Each head's learned filter over lags, after the mean's normalisation, one panel per variant (its first
    trial with probes), with the receptive field (lag holding 90% of the mass) in the legend."""
    trials = [
        (t, v) for t, v in zip(study.trials["trial"], study.trials["variant"]) if study.probes.get(t, {}).get("filters")
    ]
    first = {}
    for t, v in trials:
        first.setdefault(v, t)
    if not first:
        return None
    variants = sorted(first)
    fig = make_subplots(rows=1, cols=len(variants), subplot_titles=[esc(v) for v in variants], shared_yaxes=True)
    for i, v in enumerate(variants):
        for f in study.probes[first[v]]["filters"]:
            w = f.get("effective") or []
            fig.add_trace(
                go.Scatter(
                    x=list(range(1, len(w) + 1)),
                    y=w,
                    mode="lines",
                    line=dict(width=1),
                    name=esc(f"{v} L{f['layer']} h{f['head']} (rf {f.get('receptive_field')})"),
                    showlegend=len(variants) <= 4,
                ),
                row=1,
                col=i + 1,
            )
        fig.update_xaxes(type="log", title_text="lag + 1 (log)", row=1, col=i + 1)
    fig.update_yaxes(title_text="effective weight", row=1, col=1)
    fig.update_layout(**LAYOUT, height=420, title="Toeplitz filters per head (effective weights over lags)")
    return fig


# name -> builder, the figures every study gets; a report view adds its own (reports/sections.py).
# PNGs are written for every figure built.
FIGURES = {
    "frontier": frontier,
    "configs": configs,
    "differences": differences,
    "probes": probes,
    "curves": curves,
}


def build_figures(study, res):
    from reports.sections import study_sections  # here: sections.py imports this module

    views, _ = study_sections(study)
    builders = {**FIGURES, **{name: b for view in views.values() for name, b in view.figures.items()}}
    out = {}
    for name, builder in builders.items():
        fig = builder(study, res)
        if fig is not None:
            out[name] = fig
    return out


def write_pngs(figs, outdir):
    """All figures to OUTDIR/NAME.png in one Chromium session. Returns the paths written.

    Static export needs kaleido and a Chromium; without them the report still builds
    and one warning line says why there are no PNGs.
    """
    if not figs:
        return []
    outdir = Path(outdir)
    try:
        import plotly.io as pio

        # drawn outside the study folder in one batch (one Chromium start), then each published whole
        with tempfile.TemporaryDirectory(prefix="nanostudies-png-") as tmp:
            names = list(figs)
            tmp_paths = [Path(tmp) / f"{n}.png" for n in names]
            sizes = [PNG_SIZE.get(n, (1000, figs[n].layout.height or 450)) for n in names]
            pio.write_images(
                [figs[n] for n in names], tmp_paths, width=[w for w, _ in sizes], height=[h for _, h in sizes], scale=1
            )
            paths = []
            for n, p in zip(names, tmp_paths):
                write_atomic(outdir / f"{n}.png", p.read_bytes())
                paths.append(outdir / f"{n}.png")
            return paths
    except Exception as e:  # kaleido or Chromium missing or broken: the HTML matters more
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"reports: warning: no PNGs written ({e.__class__.__name__}: {msg[:200]})", file=sys.stderr)
        return []


def scaling_flops(study, res):
    """Left: the isoFLOP curves, loss vs N per compute budget and arm, measured points and the fitted
    L(N, C / 6N), each arm's N*(C) starred. Right: each arm's compute-optimal loss L*(C) with its bootstrap band,
    and the crossover with its interval."""
    s = res.get("scaling_flops")
    if not s:
        return None
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.08,
        subplot_titles=[f"isoFLOP curves: {s['metric']} vs N per budget C", "compute-optimal loss L*(C)"],
    )
    budgets = s["budgets"]
    colours = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(budgets)}
    dashes = ["solid", "dash", "dot", "dashdot"]
    symbols = ["circle", "diamond", "square", "cross"]
    for k, (arm, e) in enumerate(s["arms"].items()):
        pts = e["points"]
        for c in budgets:
            mine = sorted((p for p in pts if p["C"] == c), key=lambda p: p["N"])
            fig.add_trace(
                go.Scatter(
                    x=[p["N"] for p in mine],
                    y=[p["L"] for p in mine],
                    mode="markers",
                    marker=dict(color=colours[c], symbol=symbols[k % 4], size=10),
                    name=esc(f"{arm}, C = {c:.3g}"),
                    legendgroup=esc(arm),
                    text=[esc(p["trial"]) for p in mine],
                    hovertemplate="%{text}<br>N %{x:,.0f}<br>%{y:.4f}<extra></extra>",
                ),
                row=1,
                col=1,
            )
            if "fit" not in e or not mine:
                continue
            f = e["fit"]
            lo, hi = min(p["N"] for p in pts) / 1.5, max(p["N"] for p in pts) * 1.5
            n = np.logspace(math.log10(lo), math.log10(hi), 60)
            fit_loss = lambda N, D: (
                math.exp(f["e"]) + math.exp(f["a"]) * N ** -f["alpha"] + math.exp(f["b"]) * D ** -f["beta"]
            )  # noqa: E731
            fig.add_trace(
                go.Scatter(
                    x=n,
                    y=fit_loss(n, c / (6 * n)),
                    mode="lines",
                    line=dict(color=colours[c], dash=dashes[k % 4], width=1.5),
                    name=esc(f"{arm} fit, C = {c:.3g}"),
                    legendgroup=esc(arm),
                    showlegend=False,
                    hoverinfo="skip",
                ),
                row=1,
                col=1,
            )
            opt = next(o for o in e["optimal"] if o["C"] == c)
            fig.add_trace(
                go.Scatter(
                    x=[opt["N"]],
                    y=[opt["L"]],
                    mode="markers",
                    marker=dict(color=colours[c], symbol="star", size=13, line=dict(color="black", width=1)),
                    name=esc(f"{arm} N*({c:.3g})"),
                    legendgroup=esc(arm),
                    showlegend=False,
                    hovertemplate=esc(f"{arm} N*") + " %{x:,.0f}<br>L* %{y:.4f}<extra></extra>",
                ),
                row=1,
                col=1,
            )
        if "curve" in e:
            colour = PALETTE[(len(budgets) + k) % len(PALETTE)]
            C = [p["C"] for p in e["curve"]]
            fig.add_trace(
                go.Scatter(
                    x=C + C[::-1],
                    y=[p["ci"][1] for p in e["curve"]] + [p["ci"][0] for p in e["curve"]][::-1],
                    fill="toself",
                    fillcolor=colour,
                    opacity=0.2,
                    line=dict(width=0),
                    name=esc(f"{arm} 95% band"),
                    legendgroup=esc(arm),
                    hoverinfo="skip",
                ),
                row=1,
                col=2,
            )
            fig.add_trace(
                go.Scatter(
                    x=C,
                    y=[p["L"] for p in e["curve"]],
                    mode="lines",
                    line=dict(color=colour, dash=dashes[k % 4]),
                    name=esc(f"{arm} L*(C)"),
                    legendgroup=esc(arm),
                ),
                row=1,
                col=2,
            )
    for x in s["crossovers"]:
        if x["at"]:
            fig.add_vline(x=x["at"], line_dash="dot", line_color="black", row=1, col=2)
            lo, hi = x["ci"]
            if _finite(lo) and _finite(hi):
                fig.add_vrect(x0=lo, x1=hi, fillcolor="grey", opacity=0.15, line_width=0, row=1, col=2)
    fig.add_vrect(
        x0=budgets[0], x1=budgets[-1], fillcolor="green", opacity=0.06, line_width=0, row=1, col=2
    )  # the measured budgets: outside it the fit extrapolates
    fig.update_xaxes(type="log", title_text="N (parameters)", row=1, col=1)
    fig.update_xaxes(type="log", title_text="C = 6ND (FLOPs)", row=1, col=2)
    fig.update_yaxes(title_text=esc(s["metric"]), row=1, col=1)
    fig.update_layout(**LAYOUT, height=520)
    return fig
