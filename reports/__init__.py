"""
Study reports, from files only (no torch, no ray):

    collect  -> load_study(dir): study.json, trials.parquet, trials/*/metrics.jsonl, optuna.db as pandas frames
    analyse  -> Pareto fronts, t-intervals, paired or Welch tests vs the baseline, power-law fits with bootstrap intervals
    figures  -> plotly figures; PNG export through kaleido + Chromium
    html     -> report.html, self-contained (plotly.js inlined once), every study string escaped
    sections -> the report views by name (study.json "views"): each one's analysis, section, figures, files
    build    -> python -m reports.build results/STUDY   (build_report() for study.run)
    serve    -> python -m reports.serve [results]        (an index of studies on 127.0.0.1)
    compare  -> python -m reports.compare DIR_A DIR_B   (two runs of one study: arms, ranking, verdicts)
"""
