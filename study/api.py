"""The notebook's read side of a study: load_study(path) -> StudyResult.

    from study.api import load_study
    s = load_study("results/softmax1_ab")       # or "s3://bucket/studies/softmax1_ab"
    s.trials                                     # one row per trial (trials.parquet)
    s.summary()                                  # one row per arm: mean, 95% CI, difference from the baseline
    s.report()                                   # report.html, built by reports.build

The statistics are the report's own (reports/analyse.py): the summary and the page never disagree.
Nothing costly is imported with this module (pandas and the reports come on first use).
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

SUMMARY_COLUMNS = [
    "arm",
    "n",
    "mean",
    "ci_low",
    "ci_high",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "p_value",
    "verdict",
]


@dataclass
class StudyResult:
    path: Path  # the study's local folder (for a URI: a copy of it without checkpoints, in a temporary folder)
    meta: dict = field(repr=False)  # study.json
    trials: "pd.DataFrame" = field(repr=False)  # trials.parquet; for a running study, rows from the trial folders
    uri: str | None = None  # where the study lives when it was loaded from a storage URI
    warnings: list = field(default_factory=list)  # what could not be read (a torn metrics line, ...)

    def _study(self):
        """The reports' view of this study (metric, mode, baseline, threshold as study.json gives them)."""
        import pandas as pd

        from reports.collect import Study, normalise_trials

        name = str(self.meta.get("study") or self.path.name)
        return Study(dir=self.path, meta=self.meta, trials=normalise_trials(self.trials, name), curves=pd.DataFrame())

    def summary(self) -> "pd.DataFrame":
        """One row per arm (and budget, where the study ran several): the mean of the study's metric over the
        finished seeds with its 95% t-interval; the difference from the baseline with its 95% interval and raw
        p-value (a paired t-test over trials that share a data_seed, else Welch's: the report's
        compare_to_baseline); the verdict as the report words it (Holm-adjusted across arms, the test in brackets,
        and whether the arm meets study.json's threshold where it has one). The baseline's row: diff 0, verdict
        "baseline"."""
        import pandas as pd

        from reports.analyse import compare_to_baseline, group_keys, summarise_groups, threshold_table

        study = self._study()
        t, metric, mode, base = study.trials, study.metric, study.mode, study.baseline
        keys = group_keys(t)  # ["variant"], or ["variant", "budget"]

        def key(r):
            return tuple(r[k] for k in keys)

        comps = {key(r): r for r in compare_to_baseline(t, base, metric, mode).to_dict(orient="records")}
        met = {}
        if study.threshold is not None and base:
            met = {key(r): r["verdict"] for r in threshold_table(t, base, metric, mode, study.threshold)}
        rows = []
        for g in summarise_groups(t, metric, base).to_dict(orient="records"):
            row = dict(arm=g["variant"], **{k: g[k] for k in keys[1:]}, n=g["n"], mean=g["mean"])
            row.update(ci_low=g["ci_low"], ci_high=g["ci_high"], diff=math.nan, diff_ci_low=math.nan)
            row.update(diff_ci_high=math.nan, p_value=math.nan, verdict="no baseline")
            c = comps.get(key(g))
            if g["variant"] == base:
                row.update(diff=0.0, verdict="baseline")
            elif c:
                row.update(diff=c["diff"], diff_ci_low=c["ci_low"], diff_ci_high=c["ci_high"], p_value=c["p_value"])
                row["verdict"] = f"{c['verdict']} ({c['test']})" + (f"; {met[key(g)]}" if key(g) in met else "")
            elif base:
                row["verdict"] = f"no finished {base} trial to compare with"
            rows.append(row)
        return pd.DataFrame(rows, columns=SUMMARY_COLUMNS[:1] + keys[1:] + SUMMARY_COLUMNS[1:])

    def report(self, png: bool = True) -> Path:
        """Builds report.html (and results.json, and PNGs unless png=False) in the study's folder; its path."""
        from reports.build import build_report

        return build_report(self.path, png=png)["html"]


def load_study(path) -> StudyResult:
    """A finished or running study: its folder (results/NAME) or its storage URI (s3://..., gs://...).

    Raises study.run.UsageError (a ValueError) when the place holds no study (no readable study.json)."""
    import pandas as pd

    from reports.collect import read_trials_table
    from study.run import UsageError
    from trainables.storage import is_uri

    where, storage = str(path), None
    if is_uri(where):  # a copy without checkpoints in a temporary folder, as study.run stages a cloud study
        from study.results import StudyStorage

        base, sep, query = where.partition("?")  # a query (?endpoint_override=...) stays at the end
        output, _, name = base.rstrip("/").rpartition("/")
        try:
            storage = StudyStorage.open(output + sep + query, name)
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read {where}: {_first_line(e)}") from None
    local = storage.local if storage else Path(where)
    meta = _json_object(local / "study.json")
    if meta is None:
        if storage:
            storage.discard()
        raise UsageError(
            f"{where}: no readable study.json there; expected a study folder (results/NAME) or its storage URI, "
            "holding the study.json that study.run writes"
        )
    warnings = []
    if (local / "trials.parquet").exists():
        trials = pd.read_parquet(local / "trials.parquet")
    else:  # running: the rows the trials' own files give so far
        trials = name_arms(read_trials_table(local, warnings), meta)
    trials = trials if trials is not None else pd.DataFrame()
    return StudyResult(path=local, meta=meta, trials=trials, uri=where if storage else None, warnings=warnings)


def _json_object(path: Path) -> dict | None:
    import json

    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, a folder, or torn
        return None
    return obj if isinstance(obj, dict) else None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def name_arms(trials, meta):
    """The runner names each trial's arm (variant) when it writes trials.parquet; before that, a catalog study's
    own variant function names them from the trial's config, as study.results.collect does."""
    if trials is None or "variant" in trials:
        return trials
    from study.catalog import STUDIES

    spec = STUDIES.get(str(meta.get("study")))
    if spec is None:
        return trials
    configs = trials.drop(columns=[c for c in ("status", "error") if c in trials]).to_dict(orient="records")
    # a key another trial has and this one lacks is NaN in the frame: drop it, so variant() sees it missing
    configs = [{k: v for k, v in c.items() if not (isinstance(v, float) and math.isnan(v))} for c in configs]
    return trials.assign(variant=[spec.variant(c) for c in configs])
