"""Tune results + each trial's own files -> results/STUDY/trials.parquet and trials.csv (one row per trial).

The row format is the contract with reports/ (see shared/DESIGN.md). Metrics are read under one name
from the trial's metrics.jsonl, the same names train.py writes: the note's collector read `val_bpb`
where the runs logged `val/bpb` and its table came out empty; tests/study checks this end to end.
"""

import json
import math
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from trainables.storage import Mirror, is_uri, join, pull, read_jsonl, write_atomic

FINAL_METRICS = (
    "train_loss",
    "val_loss",
    "val_bpb",
    "tokens_per_s",
    "mfu",
    "wall_s",
    "samples_per_s",
    "gen_tokens_per_s_parallel",
    "gen_tokens_per_s_sequential",
    "gen_speedup",
    "gen_mean_time_parallel",
    "gen_mean_time_sequential",
    "gen_tokens_per_s_uncached_parallel",
    "gen_tokens_per_s_uncached_sequential",
    "gen_speedup_uncached",
    "gen_mean_time_uncached_parallel",
    "gen_mean_time_uncached_sequential",
    "gen_cache_speedup_parallel",
    "gen_cache_speedup_sequential",
)


SEED_COLUMN = re.compile(r"[a-z_]+_seed[0-9]+")  # one seed's value in a trial of several (trainables.train)


def _not_staged(rel: str) -> bool:
    """What a staged study leaves in its URI: checkpoints (Tune restores them from there), Ray Train's run
    storage, code snapshots and wandb runs (written once, never read back by the driver)."""
    parts = rel.split("/")
    return (
        parts[0] in ("train", "wandb")
        or any(p.startswith("checkpoint_") for p in parts)
        or (parts[0] == "trials" and len(parts) > 2 and parts[2] == "code")
    )


def _driver_writes(rel: str) -> bool:
    """The driver's own files; trials/, Tune's experiments (tune, tune_2, ..., confirm, ...) and train/ are written into the
    URI by the trials and by Tune themselves."""
    top = rel.split("/")[0]
    return top not in ("trials", "train") and not top.startswith(("tune", "confirm"))


@dataclass(frozen=True)
class StudyStorage:
    """Where a study lives. On a filesystem (local, or shared by every node) `local` is the study dir itself.
    With a cloud URI (--output s3://BUCKET/PATH): Tune and the trials write into `uri`, and `local` is a staging
    folder on the driver's machine holding a copy of the study without its checkpoints, which the driver reads
    (Tune's state, the trials' metrics) and writes (study.json, optuna.db, trials.parquet, the report, wandb),
    pushed up as it goes. The staging folder is private to this run (mkdtemp, mode 0700): two drivers never
    share one, and `discard` removes only the folder this run made."""

    local: Path
    uri: str | None = None

    @classmethod
    def open(cls, output: str, study: str) -> "StudyStorage":
        if not is_uri(output):
            return cls(Path(output) / study)
        uri = join(output, study)
        local = Path(tempfile.mkdtemp(prefix="nanostudies-staging-")) / study
        local.mkdir()
        pull(uri, local, skip=_not_staged)
        return cls(local, uri)

    @property
    def root(self) -> str:
        """What Tune's storage_path and the trials get."""
        return self.uri or str(self.local.resolve())

    @property
    def shown(self) -> str:
        return self.uri or str(self.local)

    @cached_property
    def files(self) -> Mirror:
        return Mirror(self.local, self.uri, skip=lambda rel: not _driver_writes(rel))

    def refresh(self):
        """The trials' files and Tune's state as the URI holds them now."""
        if self.uri:
            pull(self.uri, self.local, skip=lambda rel: _not_staged(rel) or _driver_writes(rel))

    def discard(self):
        """Drops the staging folder once everything is pushed."""
        if self.uri:
            shutil.rmtree(self.local.parent, ignore_errors=True)


def experiment_dirs(study_dir: Path) -> list[Path]:
    """tune, tune_2, ...: a finished Optuna search extended later runs as a new Tune experiment."""
    dirs = [d for d in study_dir.glob("tune*") if d.is_dir() and (d / "tuner.pkl").exists()]
    return sorted(dirs, key=lambda d: int(d.name.split("_")[1]) if "_" in d.name else 1)


def confirm_dirs(study_dir: Path) -> list[Path]:
    """confirm, confirm_2, ...: the re-runs of an Optuna search's best configs (--set confirm_top), one per search
    that ended with configs not yet confirmed."""
    dirs = [d for d in study_dir.glob("confirm*") if d.is_dir() and (d / "tuner.pkl").exists()]
    return sorted(dirs, key=lambda d: int(d.name.split("_")[1]) if "_" in d.name else 1)


def tune_outcomes(study_dir: Path) -> dict:
    """trial name -> (error string or None, Tune status) over every experiment of the study."""
    from ray.tune import ExperimentAnalysis

    out = {}
    for exp in experiment_dirs(study_dir) + confirm_dirs(study_dir):
        analysis = ExperimentAnalysis(str(exp))
        for trial in analysis.trials:
            error = None
            if trial.status == "ERROR":
                # trial.path: the trial's dir under the experiment as given (a staged copy included);
                # local_path is Ray's session folder on the machine that ran it
                error = _last_error_line(Path(trial.path) / "error.txt") or "trial failed"
            out[str(trial)] = (error, trial.status)
    return out


def _last_error_line(path: Path) -> str | None:
    """The reason, not the traceback: the last line naming an exception."""
    if not path.exists():
        return None
    lines = [l.strip() for l in path.read_text(errors="replace").splitlines() if l.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line or "Failed" in line:
            return line[:500]
    return lines[-1][:500] if lines else None


def collect(study_dir: Path, spec, outcomes: dict | None = None) -> pd.DataFrame:
    """One row per trial directory under study_dir/trials, with Tune's outcome where known.

    A file torn by a crash (written by an older version, or damaged) costs only what it held, with one
    warning on stderr naming it: a torn last line of metrics.jsonl is skipped; a torn config.json gives a
    row without the resolved model keys, params and FLOPs; a torn trial_config.json gives a row with status
    "failed", no config keys or variant, and an error saying so (Tune's own error, if any, comes first)."""
    outcomes = tune_outcomes(study_dir) if outcomes is None else outcomes
    rows = []
    for trial_dir in sorted((study_dir / "trials").glob("*")):
        if not (trial_dir / "trial_config.json").exists():
            continue
        config = _read_json(trial_dir / "trial_config.json")
        resolved = (_read_json(trial_dir / "config.json") or {}) if (trial_dir / "config.json").exists() else {}
        metrics = _read_metrics(trial_dir / "metrics.jsonl")
        error, tune_status = outcomes.get(trial_dir.name, (None, None))
        if config is None:
            config, error = {}, error or "trial_config.json is torn (unreadable JSON): the trial's config is unknown"
        final = metrics[-1] if metrics else {}
        params = resolved.get("params", {})
        planned = resolved.get("planned_steps")
        if error:
            status = "failed"
        elif tune_status in ("RUNNING", "PENDING", "PAUSED") or (tune_status is None and not final):
            status = "unfinished"
        elif planned and final.get("step", 0) < planned:
            status = "stopped"  # an early-stopping scheduler ended it
        else:
            status = "done"
        model = resolved.get("model", {})
        seed = int(config.get("seed", 0))
        train = resolved.get("train", {})
        # the seeds the trial used: config.json's resolved ones, else as TrainConfig resolves them (None: the seed)
        init_seed, data_seed = (train.get(k, config.get(k)) for k in ("init_seed", "data_seed"))
        row = dict(
            trial=trial_dir.name,
            study=spec.name,
            variant=spec.arm({**config, **model}) if config else None,
            seed=seed,
            init_seed=seed if init_seed is None else int(init_seed),
            data_seed=seed if data_seed is None else int(data_seed),
            status=status,
            error=error,
        )
        row.update({k: _plain(v) for k, v in {**config, **model}.items() if k not in row})
        row.update(
            params_total=params.get("total"),
            params_non_embedding=params.get("non_embedding"),
            params_embedding=params.get("embedding"),
            params_lm_head=params.get("lm_head"),
            params_blocks=params.get("blocks"),
            flops_per_token=resolved.get("flops_per_token"),
            tokens_trained=final.get("tokens"),
            best_val_bpb=min((m["val_bpb"] for m in metrics if _finite(m.get("val_bpb"))), default=None),
            best_val_loss=min((m["val_loss"] for m in metrics if _finite(m.get("val_loss"))), default=None),
        )
        row.update({f"lr_{role}": lr for role, lr in resolved.get("lrs", {}).items()})  # the lr each part trained at
        for key in FINAL_METRICS:
            row[key] = final.get(key)
        row.update({k: v for k, v in final.items() if k.startswith("probe_")})
        # a trial of several seeds (an Optuna search's --seeds, a confirmation): its metrics above are the means
        row.update({k: v for k, v in final.items() if SEED_COLUMN.fullmatch(k)})
        row["val_ppl"] = math.exp(final["val_loss"]) if _finite(final.get("val_loss")) else None
        rows.append(row)
    return pd.DataFrame(rows)


def _read_json(path: Path) -> dict | None:
    """The JSON object in path, or None with a warning when a crash left it torn."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        print(f"warning: {path} is torn (unreadable JSON: {e}), skipped", file=sys.stderr)
        return None


def _read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    metrics, bad = read_jsonl(path)
    if bad:
        print(f"warning: {path}: skipped {bad} torn or unreadable line(s)", file=sys.stderr)
    return metrics


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _plain(v):
    """Parquet wants one type per column: lists and dicts become JSON text."""
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def write_trials(df: pd.DataFrame, study_dir: Path):
    """trials.parquet and trials.csv, each written whole (never half-written)."""
    write_atomic(study_dir / "trials.parquet", writer=lambda p: df.to_parquet(p, index=False))
    write_atomic(study_dir / "trials.csv", writer=lambda p: df.to_csv(p, index=False))


def write_view_outputs(df: pd.DataFrame, views, study_dir: Path):
    """Files the study's report views promise beside the generic ones (reports/sections.py), e.g. Toeplitz's
    all_results.json."""
    from reports.sections import write_outputs  # on use: it brings plotly and scipy with it

    write_outputs(df, views, study_dir)
