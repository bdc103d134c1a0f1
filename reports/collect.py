"""
Read one study's output directory into pandas frames. Files only: no torch, no ray.

    results/STUDY/study.json, trials.parquet (or trials.csv), trials/NAME/metrics.jsonl,
    trials/NAME/samples.json, trials/NAME/env.json, optuna.db

A partial study reports what it has: unreadable pieces become warnings, not errors.
Only a directory with nothing to report at all is an error (StudyError).
"""

import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trainables import storage

# the report views of a study.json written before it listed its own ("views"), by the family it names
FAMILY_VIEWS = {
    "nanohead": ("nanohead",),
    "nanohead_search": ("optuna",),
    "softmax1": ("softmax1",),
    "toeplitz": ("toeplitz",),
    "vocab_depth": ("vocab_depth",),
    "scaling": ("scaling",),
}
METRIC_NAME = re.compile(r"[A-Za-z0-9_.]+")
SEED_COLUMN = re.compile(r"[a-z_]+_seed[0-9]+")  # one seed's value in a trial of several (val_bpb_seed2)
CURVE_KEYS = ("step", "tokens", "train_loss", "val_loss", "val_bpb", "lr", "tokens_per_s", "mfu", "flops", "wall_s")


class StudyError(ValueError):
    """The directory holds no study we can report on (the user pointed at the wrong place)."""


@dataclass
class Study:
    dir: Path
    meta: dict  # study.json, or what we could guess without it
    trials: pd.DataFrame  # one row per trial, the contract's columns
    curves: pd.DataFrame  # long: trial, variant, step, tokens, train_loss, val_bpb, ...
    samples: dict = field(default_factory=dict)  # trial -> {"prompt": str, "samples": [str]}
    envs: dict = field(default_factory=dict)  # trial -> env.json
    optuna: dict | None = None  # {"name", "directions", "trials": DataFrame, "study": optuna.Study}
    probes: dict = field(default_factory=dict)  # trial -> probes.json (per-layer / per-head details)
    warnings: list = field(default_factory=list)

    @property
    def name(self):
        return str(self.meta.get("study") or self.dir.name)

    @property
    def family(self):
        return self.meta.get("family")

    @property
    def metric(self):
        """The column to rank by; a name that is not a plain column name falls back to val_bpb."""
        m = str(self.meta.get("metric") or "val_bpb")
        return m if METRIC_NAME.fullmatch(m) else "val_bpb"

    @property
    def mode(self):
        return "max" if str(self.meta.get("mode", "min")).lower() in ("max", "maximize") else "min"

    @property
    def baseline(self):
        """The variant the others are compared against: study.json's, when it has trials (never a guess)."""
        b = self.meta.get("baseline")
        b = b.get("variant") if isinstance(b, dict) else b  # {"variant": "p0"}, or just "p0"
        return b if b is not None and str(b) in set(self.trials["variant"].astype(str)) else None

    @property
    def views(self):
        """The report sections beyond the common ones: study.json's list, else its family's (older files),
        with "optuna" added when the study has an Optuna database."""
        views = self.meta.get("views")
        views = [str(v) for v in views] if isinstance(views, list) else list(FAMILY_VIEWS.get(self.family, ()))
        return views + (["optuna"] if self.optuna and "optuna" not in views else [])

    @property
    def threshold(self):
        """The decision rule's fraction (0.05: an arm must beat the baseline by 5%), or None."""
        t = self.meta.get("threshold")
        return float(t) if _is_fraction(t) else None

    @property
    def note(self):
        """The research note the study comes from ("seed_note" in older study.json files)."""
        return self.meta.get("note") or self.meta.get("seed_note")

    @property
    def title(self):
        return str(self.meta.get("title") or self.name)


def _is_fraction(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v < 1


def read_json(path, warnings):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        warnings.append(f"{path.name}: unreadable ({e.__class__.__name__}: {e})")
        return None


def read_jsonl(path, warnings):
    """One JSON object per line; a torn last line (a killed trial) is skipped with a warning."""
    rows, bad = storage.read_jsonl(path)
    if bad:
        warnings.append(f"{path.parent.name}/{path.name}: skipped {bad} unreadable line(s)")
    return rows


def read_trials_table(d, warnings):
    """trials.parquet, else trials.csv, else rows rebuilt from trials/*/ (a running study, or one cut short)."""
    for name, reader in (("trials.parquet", pd.read_parquet), ("trials.csv", pd.read_csv)):
        path = d / name
        if path.exists():
            try:
                return reader(path)
            except Exception as e:  # a half-written table: say so and try the next source
                warnings.append(f"{name}: unreadable ({e.__class__.__name__}: {e})")
    rows = [trial_row(tdir, warnings) for tdir in sorted(p for p in (d / "trials").glob("*") if p.is_dir())]
    if rows:
        warnings.append(
            "no trials.parquet or trials.csv: rows rebuilt from trials/*/ (done: the last eval reached the planned "
            "steps; unfinished: not yet; stopped: no planned steps recorded)"
        )
        return pd.DataFrame(rows)
    return None


def _object(v):
    return v if isinstance(v, dict) else {}


def trial_row(tdir, warnings):
    """One trial's row from its files: trial_config.json (the searched config), config.json (the trainer's
    record: the trial's config, the model as built, parameter counts, planned steps) and metrics.jsonl."""
    searched = _object(read_json(tdir / "trial_config.json", warnings))
    built = _object(read_json(tdir / "config.json", warnings))
    config = {**searched, **_object(built.get("trial")), **_object(built.get("model")), **built}
    row = {"trial": tdir.name, **{k: v for k, v in config.items() if not isinstance(v, (dict, list))}}
    for key in ("init_seed", "data_seed"):  # as the trainer resolved them, else as it would have (None: the seed)
        value = _object(built.get("train")).get(key, config.get(key))
        row[key] = config.get("seed", 0) if value is None else value
    row.update({f"params_{k}": v for k, v in _object(built.get("params")).items() if isinstance(v, (int, float))})
    metrics = read_jsonl(tdir / "metrics.jsonl", warnings) if (tdir / "metrics.jsonl").exists() else []
    last = {}
    for m in metrics:
        last.update({k: v for k, v in m.items() if v is not None})
    row.update(
        {k: last[k] for k in ("train_loss", "val_loss", "val_bpb", "tokens_per_s", "mfu", "wall_s") if k in last}
    )
    if "tokens" in last:
        row["tokens_trained"] = last["tokens"]
    row.update({k: v for k, v in last.items() if SEED_COLUMN.fullmatch(k)})  # a trial of several seeds: each one's
    bpbs = [m["val_bpb"] for m in metrics if isinstance(m.get("val_bpb"), (int, float))]
    row["best_val_bpb"] = min(bpbs) if bpbs else math.nan
    planned = row.get("planned_steps")
    if not isinstance(planned, (int, float)):
        row["status"], row["error"] = "stopped", "no trials table: row rebuilt from this trial's files"
    else:
        row["status"] = "done" if last.get("step", 0) >= planned else "unfinished"
        row["error"] = None
    return row


def normalise_trials(df, study_name):
    """Make sure the columns every view relies on exist, with sane types."""
    df = df.copy()
    if "trial" not in df:
        df["trial"] = [f"trial_{i}" for i in range(len(df))]
    df["trial"] = df["trial"].astype(str)
    if "study" not in df:
        df["study"] = study_name
    if "variant" not in df:
        df["variant"] = "all"
    df["variant"] = df["variant"].astype(object).where(df["variant"].notna(), "(none)").astype(str)
    if "seed" not in df:
        df["seed"] = 0
    if "status" not in df:
        df["status"] = "done"
    df["status"] = df["status"].astype(object).where(df["status"].notna(), "unknown").astype(str).str.lower()
    if "error" not in df:
        df["error"] = None
    if "budget" not in df and "target_params" in df:  # the runner's name for the same thing
        df["budget"] = df["target_params"]
    if "best_val_bpb" not in df and "val_bpb" in df:
        df["best_val_bpb"] = df["val_bpb"]
    for col in df.columns:
        # numbers stored as text by a CSV round trip or an object column: make them numeric
        if (df[col].dtype == object or pd.api.types.is_string_dtype(df[col])) and col not in (
            "trial",
            "study",
            "variant",
            "status",
            "error",
        ):
            conv = pd.to_numeric(df[col], errors="coerce")
            if conv.notna().sum() == df[col].notna().sum() and df[col].notna().any():
                df[col] = conv
    for col in df.columns:  # a config key named like a credential keeps its column, not its values
        if is_secret_name(col):
            df[col] = df[col].map(lambda v: "[redacted]" if isinstance(v, str) and v else v)
    # derived: training FLOPs = FLOPs per token x tokens trained
    if "flops_per_token" in df and "tokens_trained" in df:
        df["train_flops"] = pd.to_numeric(df["flops_per_token"], errors="coerce") * pd.to_numeric(
            df["tokens_trained"], errors="coerce"
        )
    return df.reset_index(drop=True)


def read_curves(d, trials, warnings):
    """Every trial's metrics.jsonl as one long frame (built once: a frame per trial is slow at 1,000)."""
    rows = []
    for name, variant in zip(trials["trial"], trials["variant"]):
        path = d / "trials" / name / "metrics.jsonl"
        if _inside(d, path) and path.exists():
            rows += [
                {"trial": name, "variant": variant, **{k: r.get(k) for k in CURVE_KEYS}}
                for r in read_jsonl(path, warnings)
            ]
    if not rows:
        return pd.DataFrame(columns=["trial", "variant", *CURVE_KEYS])
    df = pd.DataFrame(rows)
    for k in CURVE_KEYS:  # a stray string in a metrics line becomes NaN, not a crash
        df[k] = pd.to_numeric(df[k], errors="coerce")
    return df


def _inside(root, path):
    """A trial name is data: never let '../x' reach outside the study directory."""
    try:
        return os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)
    except (OSError, ValueError):
        return False


def read_trial_files(d, trials, filename, warnings):
    out = {}
    for name in trials["trial"]:
        path = d / "trials" / name / filename
        if _inside(d, path) and path.exists():
            obj = read_json(path, warnings)
            if obj is not None:
                out[name] = obj
    return out


def read_optuna(d, study_name, warnings):
    """optuna.db through Optuna's own API (its schema is Optuna's business, not ours)."""
    path = d / "optuna.db"
    if not path.exists():
        return None
    try:
        import optuna  # only here: a study without Optuna never pays for the import

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = f"sqlite:///{path}"
        names = optuna.get_all_study_names(storage)
        if not names:
            return None
        name = study_name if study_name in names else names[0]
        ostudy = optuna.load_study(study_name=name, storage=storage)
        directions = [dd.name.lower() for dd in ostudy.directions]
        rows = []
        for t in ostudy.trials:
            row = {"number": t.number, "state": t.state.name.lower(), "trial": t.user_attrs.get("trial")}
            for i in range(len(directions)):
                row[f"value_{i}"] = t.values[i] if t.values else math.nan
            row.update({f"param_{k}": v for k, v in t.params.items()})
            rows.append(row)
        # the Study itself too: optuna.visualization draws from it, and the importances are fitted on it
        return dict(name=name, directions=directions, trials=pd.DataFrame(rows), study=ostudy)
    except Exception as e:  # a broken or foreign database must not sink the rest of the report
        warnings.append(f"optuna.db: unreadable ({e.__class__.__name__}: {e})")
        return None


def load_study(path):
    """Everything a report needs from one study directory."""
    d = Path(path)
    if not d.is_dir():
        raise StudyError(f"not a study directory: {d}")
    warnings = []
    meta = read_json(d / "study.json", warnings) or {}
    if not isinstance(meta, dict):
        warnings.append("study.json: not a JSON object, ignored")
        meta = {}
    if not meta:
        warnings.append("no study.json: study name taken from the directory")
    meta = scrub(meta)
    table = read_trials_table(d, warnings)
    if table is None:
        raise StudyError(f"no trials.parquet, trials.csv or trials/*/ in {d}")
    name = str(meta.get("study") or d.name)
    trials = normalise_trials(table, name)
    if "family" not in meta and "family" in trials and trials["family"].notna().any():
        meta["family"] = str(trials["family"].dropna().iloc[0])
    if not METRIC_NAME.fullmatch(str(meta.get("metric") or "val_bpb")):
        warnings.append(f"metric {meta['metric']!r} is not a column name: ranking by val_bpb")
    if "views" not in meta and meta.get("family") not in (None, "custom", *FAMILY_VIEWS):
        warnings.append(f"unknown family {meta.get('family')!r} and no views: showing the common report only")
    if meta.get("threshold") is not None and not _is_fraction(meta["threshold"]):
        warnings.append(f"threshold {meta['threshold']!r} is not a fraction in [0, 1): no threshold verdict")
    b = meta.get("baseline")
    b = b.get("variant") if isinstance(b, dict) else b
    if b is not None and str(b) not in set(trials["variant"]):
        warnings.append(f"baseline {b!r} has no trials: no differences computed")
    return Study(
        dir=d,
        meta=meta,
        trials=trials,
        curves=read_curves(d, trials, warnings),
        samples=read_trial_files(d, trials, "samples.json", warnings),
        envs=scrub(read_trial_files(d, trials, "env.json", warnings)),
        optuna=read_optuna(d, name, warnings),
        probes=read_trial_files(d, trials, "probes.json", warnings),
        warnings=warnings,
    )


# -----------------------------------------------------------------------------
# Secrets: nothing from the environment that looks like a credential reaches a report

SECRET_NAME = re.compile(
    r"(api[_-]?key|secret|passw(or)?d|credential|private[_-]?key|access[_-]?key|(^|_)token$|auth|session[_-]?key|cookie)",
    re.I,
)


def is_secret_name(name):
    return bool(SECRET_NAME.search(str(name)))


def secret_values():
    """Values of this process's environment variables whose names look like credentials."""
    return sorted({v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= 6}, key=len, reverse=True)


def redact(text, secrets=None):
    """Text with every credential value from the environment replaced, raw, HTML- or JSON-escaped."""
    for v in secret_values() if secrets is None else secrets:
        for form in {v, html.escape(v), json.dumps(v)[1:-1]}:
            text = text.replace(form, "[redacted]")
    return text


def scrub(obj):
    """Copy of a JSON-like object with credential-looking keys' values replaced."""
    if isinstance(obj, dict):
        return {k: ("[redacted]" if is_secret_name(k) and v not in (None, "") else scrub(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v) for v in obj]
    return obj


def to_jsonable(obj):
    """numpy/pandas scalars to plain Python; NaN and inf to None (JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray, pd.Series)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    try:
        if pd.isna(obj):
            return None
    except (TypeError, ValueError):
        pass
    return str(obj)
