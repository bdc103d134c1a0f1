"""
The report views a study can ask for, by name (study.json "views", the catalog's StudySpec.views).

Every study gets the common report: summary, frontier, arms vs the baseline with intervals and p-values,
the threshold verdict when study.json has one, probes, learning curves, failures, trials, environment.
A view adds one section to it, bundled here: what it adds to the analysis (and results.json), its page
section and title, its figures, and the files it writes beside trials.parquet when the study ends.
A study with no views (a user's own study) gets the common report alone; an unknown name is a warning.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from reports import analyse, figures, html, scaling_fit
from trainables.storage import write_atomic


@dataclass(frozen=True, kw_only=True)
class Section:
    title: str  # the page section's heading
    analyse: Callable | None = None  # study -> dict merged into the analysis (results.json)
    html: Callable | None = None  # (study, res, figs) -> the section's HTML, or None when it has nothing to show
    figures: dict = field(default_factory=dict)  # name -> builder(study, res) -> plotly Figure or None
    summary: Callable | None = None  # res -> lines for the summary at the top of the page
    outputs: Callable | None = None  # (trials DataFrame, study_dir) -> writes files beside trials.parquet
    shows_samples: bool = False  # the section shows the samples itself: no common Samples section
    judges_threshold: bool = False  # the section judges the study's threshold itself (on its own ratio)


def toeplitz_all_results(df: pd.DataFrame, study_dir):
    """Experiment 010's all_results.json, per trial: training metrics (the final eval and the best one, which the
    note reports) and the generation benchmark, heads parallel vs sequential, cached vs uncached (its four settings)."""
    if df.empty:
        return
    out = {}
    for _, row in df.iterrows():
        get = lambda k: None if pd.isna(row.get(k)) else float(row[k])
        setting = lambda k: (
            None if k not in row or pd.isna(row[k]) else row[k] if isinstance(row[k], str) else bool(row[k])
        )
        bench = lambda k: dict(tokens_per_s=get(f"gen_tokens_per_s_{k}"), mean_time_s=get(f"gen_mean_time_{k}"))
        out[row["trial"]] = dict(
            variant=row["variant"],
            toep_mean=bool(row["toep_mean"]),
            toep_proj=bool(row["toep_proj"]),
            toep_filter=setting("toep_filter"),
            toep_init=setting("toep_init"),
            toep_proj_bias=setting("toep_proj_bias"),
            seed=int(row["seed"]),
            status=row["status"],
            error=row["error"] if isinstance(row["error"], str) else None,
            training=dict(
                train_loss=get("train_loss"),
                eval_loss=get("val_loss"),
                eval_bpb=get("val_bpb"),
                eval_loss_best=get("best_val_loss"),
                eval_bpb_best=get("best_val_bpb"),
                runtime_s=get("wall_s"),
                samples_per_s=get("samples_per_s"),
                params=get("params_total"),
            ),
            benchmark_parallel=bench("parallel"),
            benchmark_sequential=bench("sequential"),
            benchmark_uncached_parallel=bench("uncached_parallel"),
            benchmark_uncached_sequential=bench("uncached_sequential"),
            speedup=get("gen_speedup"),
            speedup_uncached=get("gen_speedup_uncached"),
            cache_speedup_parallel=get("gen_cache_speedup_parallel"),
            cache_speedup_sequential=get("gen_cache_speedup_sequential"),
        )
    write_atomic(study_dir / "all_results.json", json.dumps(out, indent=2))


# view name -> Section; a study's sections come in the order its views list them
SECTIONS = {
    "nanohead": Section(
        title="Nano heads",
        analyse=analyse.nanohead_analysis,
        html=html.nanohead_html,
        figures={"nanohead": figures.nanohead},
    ),
    "optuna": Section(
        title="Optuna search",
        analyse=analyse.optuna_analysis,
        html=html.optuna_html,
        figures={
            "optuna_history": figures.optuna_history,
            "optuna_importances": figures.optuna_importances,
            "optuna_parallel": figures.optuna_parallel,
            "optuna_slice": figures.optuna_slice,
            "optuna_contour": figures.optuna_contour,
            "optuna_pareto": figures.optuna_pareto,
        },
    ),
    "softmax1": Section(
        title="softmax1",
        analyse=analyse.softmax1_analysis,
        html=html.softmax1_html,
        figures={"softmax1": figures.softmax1},
        summary=html.softmax1_summary,
        shows_samples=True,
        judges_threshold=True,  # the note's 5% is on perplexity, e^(loss difference), not on the bpb ratio
    ),
    "toeplitz": Section(
        title="Toeplitz mixer",
        analyse=analyse.toeplitz_analysis,
        html=html.toeplitz_html,
        figures={"toeplitz": figures.toeplitz, "toeplitz_filters": figures.toeplitz_filters},
        outputs=toeplitz_all_results,
    ),
    "vocab_depth": Section(
        title="Vocabulary vs depth",
        analyse=analyse.vocab_depth_analysis,
        html=html.vocab_depth_html,
        figures={"vocab_depth": figures.vocab_depth},
    ),
    "scaling": Section(
        title="Scaling",
        analyse=analyse.scaling_analysis,
        html=html.vocab_depth_html,
        figures={"vocab_depth": figures.vocab_depth},
    ),
    "scaling_flops": Section(
        title="Compute-matched scaling",
        analyse=scaling_fit.scaling_flops_analysis,
        html=html.scaling_flops_html,
        figures={"scaling_flops": figures.scaling_flops},
        summary=html.scaling_flops_summary,
    ),
}


def sections_for(views):
    """(name -> Section for the known names, in order; a warning line per unknown name)."""
    known = {v: SECTIONS[v] for v in views if v in SECTIONS}
    unknown = [v for v in dict.fromkeys(views) if v not in SECTIONS]
    return known, [f"unknown report view {v!r}: skipped (known views: {', '.join(SECTIONS)})" for v in unknown]


def study_sections(study):
    return sections_for(study.views)


def write_outputs(df: pd.DataFrame, views, study_dir):
    """The files the study's views add beside trials.parquet (study.results calls this when a study ends)."""
    for section in sections_for(views)[0].values():
        if section.outputs:
            section.outputs(df, study_dir)
