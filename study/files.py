"""Study files: a user's own study as a `.toml` (data) or a `.py` (a StudySpec named STUDY, and any mixers it
registers with register_mixer), read into the same StudySpec the built-in studies are and registered by name.

A file is checked as a --set is: an unknown key, a wrong type, an empty axis, a baseline that is not one of the
arms, a name that is not an identifier each give one UsageError line naming the file and the key. The file's text
goes into study.json (study_file), so --resume and the report never need the file where it was.
"""

import importlib.util
import json
import os
import sys
import tomllib
from pathlib import Path

from search_spaces.spec import MODES, PROFILE_NAMES, PROFILE_TABLE_KEYS, SCHEDULERS, SEARCHERS, StudySpec
from study.catalog import register_study
from study.errors import UsageError
from study.run import check_type

# A submitted job's study file: its name and text (study.submit), for a cluster that never saw the file
STUDY_FILE_ENV = "NANOSTUDIES_STUDY_FILE"
STUDY_MODULE_PREFIX = "nanostudies_study_"  # a .py study runs as a module of this name, which only the driver has
TOP_KEYS = {
    "name": "the results folder's name, [a-z0-9_]+",
    "hypothesis": "what the study tests, in a sentence",
    "note": "where the idea comes from (optional)",
    "baseline": "the arm the others are compared against: {axis = value, ...}",
    "metric": "val_bpb (default), val_loss, best_val_bpb or train_loss",
    "mode": "min (default) or max",
    "base": "[base]: keys every trial has",
    "axes": "[axes]: key = [values] (grid)",
    "space": "[space]: key = {low, high, log, int} or {choices} (searcher = 'optuna')",
    "profiles": "[profiles.NAME]: base keys, axes, space and num_samples for one profile",
    "searcher": "grid (default) or optuna",
    "scheduler": "fifo (default) or asha",
    "num_samples": "trials an Optuna search runs",
    "threshold": "decision rule: the fraction by which an arm must beat the baseline, e.g. 0.05",
}


def load_study_file(path: str) -> StudySpec:
    """Reads, checks and registers a study file; the one-line UsageError names the file and the key."""
    file = Path(path).expanduser()
    shipped = json.loads(os.environ.get(STUDY_FILE_ENV) or "{}")
    if not file.exists() and shipped.get("name") == str(path):  # a job's study file, shipped by study.submit
        return load_study_text(shipped["text"], shipped["name"])
    if not file.is_file():
        raise UsageError(f"{path}: no such study file")
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot be read ({e})") from None
    return load_study_text(text, file.name, str(file))


def load_study_text(text: str, name: str, shown: str | None = None) -> StudySpec:
    """A study file's text (name: its file name, which says .toml or .py) -> the registered StudySpec."""
    shown = shown or name
    spec = _read_python(text, name, shown) if name.endswith(".py") else _read_toml(text, shown)
    spec = _with_source(spec, text, name)
    try:
        return register_study(spec)
    except ValueError as e:
        raise UsageError(f"{shown}: {e}") from None


def study_from_results(name: str, output: str) -> StudySpec | None:
    """A user's study by name, from the copy of its file that its results folder's study.json keeps."""
    from trainables.storage import is_uri, join, open_location

    location = join(output if is_uri(output) else str(Path(output).expanduser().resolve()), name, "study.json")
    try:
        fs, path = open_location(location)
        with fs.open_input_stream(path) as f:
            meta = json.loads(f.read().decode())
    except (OSError, ValueError):
        return None
    saved = meta.get("study_file")
    if not saved or meta.get("study") != name:
        return None
    return load_study_text(saved["text"], saved["name"], f"{location} (study_file {saved['name']})")


def _read_toml(text: str, shown: str) -> StudySpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{shown}: not valid TOML ({e})") from None
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise UsageError(f"{shown}: unknown key {unknown[0]!r}; allowed: {', '.join(TOP_KEYS)}")
    for key in ("name", "hypothesis"):
        if key not in data:
            raise UsageError(f"{shown}: {key} is missing ({TOP_KEYS[key]})")
    searcher = data.get("searcher", "grid")
    if searcher == "optuna" and "axes" in data:
        raise UsageError(f"{shown}: [axes] is a grid's; an Optuna search draws from [space]")
    if searcher != "optuna" and "space" in data:
        raise UsageError(f"{shown}: [space] needs searcher = 'optuna' (a grid study lists its values in [axes])")
    fields = {k: v for k, v in data.items() if k not in ("space", "profiles")}
    fields["axes"] = data.get("space" if searcher == "optuna" else "axes", {})
    fields["profiles"] = {
        profile: {("axes" if k == "space" else k): v for k, v in table.items()}
        for profile, table in _table(data, "profiles", shown).items()
    }
    return _build(fields, shown)


def _read_python(text: str, name: str, shown: str) -> StudySpec:
    """Runs the file as a module of its own (so its mixers register) and takes its STUDY."""
    module_name = STUDY_MODULE_PREFIX + "".join(c if c.isalnum() else "_" for c in Path(name).stem)
    spec = importlib.util.spec_from_loader(module_name, loader=None, origin=shown)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = shown
    sys.modules[module_name] = module  # the mixers' classes pickle by reference to it, or by value (the service)
    try:
        exec(compile(text, shown, "exec"), module.__dict__)
    except Exception as e:
        del sys.modules[module_name]
        line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UsageError(f"{shown}: cannot be loaded: {type(e).__name__}: {line}") from None
    study = getattr(module, "STUDY", None)
    if not isinstance(study, StudySpec):
        raise UsageError(f"{shown}: defines no STUDY = StudySpec(...) (from study import StudySpec)")
    _check_data(study.base if isinstance(study.base, dict) else {}, study, shown)
    return study


def _build(fields: dict, shown: str) -> StudySpec:
    for key, kind in (("base", dict), ("axes", dict), ("baseline", dict), ("profiles", dict)):
        if key in fields and not isinstance(fields[key], kind):
            raise UsageError(f"{shown}: {key} must be a table ({TOP_KEYS[key]})")
    for key in ("name", "hypothesis", "note", "metric", "mode", "searcher", "scheduler"):
        if key in fields and not isinstance(fields[key], str):
            raise UsageError(f"{shown}: {key}={fields[key]!r}: must be text ({TOP_KEYS[key]})")
    for key, allowed in (("mode", MODES), ("searcher", SEARCHERS), ("scheduler", SCHEDULERS)):
        if key in fields and fields[key] not in allowed:
            raise UsageError(f"{shown}: {key}={fields[key]!r}: must be one of {', '.join(allowed)}")
    for profile in fields.get("profiles", {}):
        if profile not in PROFILE_NAMES:
            raise UsageError(f"{shown}: [profiles.{profile}]: no such profile; one of {', '.join(PROFILE_NAMES)}")
    try:
        spec = StudySpec(**fields)
    except ValueError as e:
        raise UsageError(f"{shown}: {e}") from None
    except TypeError as e:  # a field of the wrong kind that the dataclass could not take
        raise UsageError(f"{shown}: {e}") from None
    _check_data(fields.get("base", {}), spec, shown)
    return spec


def _check_data(base: dict, spec: StudySpec, shown: str):
    """Every key a trial gets must be a model or training key of its type; each axis a non-empty list; each
    distribution well formed."""
    tables = [("base", base, False), ("axes", spec.axes if isinstance(spec.axes, dict) else {}, True)]
    for profile, table in spec.profiles.items():
        if not isinstance(table, dict):
            raise UsageError(f"{shown}: [profiles.{profile}] must be a table")
        tables.append((f"profiles.{profile}", {k: v for k, v in table.items() if k not in PROFILE_TABLE_KEYS}, False))
        tables.append((f"profiles.{profile}.axes", table.get("axes", {}), True))
    allowed = _model_keys() | {"seed"}
    for where, table, is_axes in tables:
        for key, value in table.items():
            if key not in allowed:
                raise UsageError(
                    f"{shown}: [{where}] {key}: not a model or training key; allowed: {', '.join(sorted(allowed))}"
                )
            if is_axes and spec.searcher == "optuna":
                _check_distribution(shown, where, key, value)
                continue
            if is_axes and (not isinstance(value, list) or not value):
                raise UsageError(f"{shown}: [{where}] {key}={value!r}: an axis is a non-empty list of values")
            if not is_axes and isinstance(value, list):
                raise UsageError(f"{shown}: [{where}] {key}={value!r}: a list is an axis; put it under [axes]")
            try:
                check_type(key, value)
            except ValueError as e:
                raise UsageError(f"{shown}: [{where}] {e}") from None
    if spec.searcher == "optuna" and not spec.axes:
        raise UsageError(f"{shown}: searcher = 'optuna' needs a [space] to search")


def _check_distribution(shown: str, where: str, key: str, value):
    if hasattr(value, "sample"):  # a Tune domain (a .py study may give one)
        return
    allowed = "{low = A, high = B} (with log = true, int = true) or {choices = [...]}"
    if not isinstance(value, dict) or not value:
        raise UsageError(f"{shown}: [{where}] {key}={value!r}: must be a distribution, {allowed}")
    if "choices" in value:
        if set(value) != {"choices"} or not isinstance(value["choices"], list) or not value["choices"]:
            raise UsageError(f"{shown}: [{where}] {key}: choices must be a non-empty list, alone in its table")
        for choice in value["choices"]:
            try:
                check_type(key, choice)
            except ValueError as e:
                raise UsageError(f"{shown}: [{where}] {e}") from None
        return
    extra = set(value) - {"low", "high", "log", "int"}
    low, high = value.get("low"), value.get("high")
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (low, high))
    if extra or not numbers or not low < high:
        raise UsageError(f"{shown}: [{where}] {key}={value!r}: must be {allowed} with low < high")
    if value.get("log") and low <= 0:
        raise UsageError(f"{shown}: [{where}] {key}: log = true needs low > 0")
    for flag in ("log", "int"):
        if not isinstance(value.get(flag, False), bool):
            raise UsageError(f"{shown}: [{where}] {key}: {flag} must be true or false")


def _table(data: dict, key: str, shown: str) -> dict:
    table = data.get(key, {})
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise UsageError(f"{shown}: [{key}] must hold tables ([{key}.smoke], ...)")
    return table


def _with_source(spec: StudySpec, text: str, name: str) -> StudySpec:
    from dataclasses import replace

    return replace(spec, source=text, source_name=name)


def _model_keys() -> set:
    from dataclasses import fields

    from trainables.model import GPTConfig
    from trainables.train import TrainConfig

    return {f.name for f in fields(GPTConfig)} | {f.name for f in fields(TrainConfig)}
