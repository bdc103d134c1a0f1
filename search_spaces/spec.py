"""A study as data: StudySpec, and the rule that turns a study, a profile and --set overrides into trials.

The six built-in studies are StudySpecs in their own modules here (base keys and axes as functions of the profile,
their own resolve, arm and trial names, report views, the note beside the run). A user's study is the same
dataclass with plain data instead: `base` and `axes` dicts, per-profile overrides in `profiles`, the baseline as
axis values; the generic resolve (every arm matched to `budget` by the solver when one is given), arm names and
trial names then come from the axes. study/files.py reads a `.toml` or `.py` study file into one.
"""

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .common import SEED_KEYS, architecture, seed_suffix

SEARCHERS = ("grid", "optuna")
SCHEDULERS = ("fifo", "asha")
MODES = ("min", "max")
NAME = re.compile(r"[a-z0-9_]+")
PROFILE_NAMES = ("smoke", "cpu", "gpu", "paper")
# Profile keys of a user's study: a [profiles.NAME] table holds base keys, and these (a TOML's `space` is read as axes)
PROFILE_TABLE_KEYS = ("axes", "num_samples")


# Keys every study takes with --set that steer how it runs, not what a trial trains: they never reach a trial's config.
# audit_fraction: the share of trials ASHA may not stop (study.audit.AuditedASHA, the report's pruning audit);
# confirm_top, confirm_seeds: after an Optuna search, re-run its best confirm_top configs with confirm_seeds seeds each
# (study.service.confirm_best). study.run refuses each where the study cannot use it.
RUN_KEYS = ("audit_fraction", "confirm_top", "confirm_seeds")
DEFAULT_AUDIT_FRACTION = 0.1  # where the study uses ASHA and --set gives none


@dataclass(frozen=True, kw_only=True)
class StudySpec:
    name: str  # [a-z0-9_]+: the results folder's name
    hypothesis: str
    note: str = ""  # the research note in shared/seeds the study reproduces ("" for a user's own hypothesis)
    # Constant keys of every trial (any GPTConfig / TrainConfig key): a dict goes on top of the profile's train
    # keys (without its budget: a user study is sized by its own keys unless it gives one); a function of the
    # profile returns them all.
    base: dict | Callable = field(default_factory=dict)
    # Grid: key -> list of values (the trials are their product x seeds). Optuna: key -> distribution, either a
    # Tune domain or {"low", "high", "log", "int"} / {"choices"} (a function of the profile may return either).
    axes: dict | Callable = field(default_factory=dict)
    # axes is a function of (profile, the --set keys): a key of the study's own picks its design (scaling's match)
    keyed_axes: bool = False
    profiles: dict = field(default_factory=dict)  # profile name -> {base keys..., "axes": {...}, "num_samples": N}
    baseline: str | dict | None = None  # the arm every other arm is compared against: its name, or its axis values
    metric: str = "val_bpb"
    mode: str = "min"
    searcher: str = "grid"
    scheduler: str = "fifo"
    num_samples: int | dict = 1  # trials an Optuna search runs: one number, or one per profile
    # Decision rule: an arm meets it when it beats the baseline's metric by at least this fraction, with the whole
    # 95% interval of the difference beyond the line (softmax1_ab's pre-registered 5% is threshold=0.05)
    threshold: float | None = None
    resolve: Callable | None = None  # searched config -> the full flat trial config; None: the solver if a budget
    variant: Callable | None = None  # arm name of a resolved config; None: the axis values
    trial_name: Callable | None = None  # a resolved config's trial name; None: study name, axis values, seed
    family: str = "custom"  # the report's family; "custom": the common report only
    views: tuple = ()  # report sections beyond the common ones (reports/sections.py)
    study_keys: tuple = ()  # keys that steer the study, not the model (--set-able)
    # key -> (what resolve derives it from, what to set instead): the words of the refusal of a --set that resolve
    # would replace (the check itself is study.run's; keys not here use study.run.DERIVED_FROM)
    derived: dict = field(default_factory=dict)
    # (planned trials, workers) -> FidelityRows: the note beside this plan, each difference with its reason
    # (search_spaces/fidelity.py); None for a study with no single note
    fidelity: Callable | None = None
    source: str | None = None  # a study file's text: study.json keeps it, so a resume never needs the file
    source_name: str | None = None  # that file's name (qknorm_ab.toml)

    def __post_init__(self):
        def bad(key, value, allowed):
            raise ValueError(f"{key}={value!r}: must be {allowed}")

        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            bad("name", self.name, "[a-z0-9_]+: lower-case letters, digits and _ (it names the results folder)")
        if not isinstance(self.hypothesis, str) or not self.hypothesis.strip():
            bad("hypothesis", self.hypothesis, "a sentence saying what the study tests")
        if self.metric not in ("val_bpb", "val_loss", "best_val_bpb", "train_loss"):
            bad("metric", self.metric, "one of val_bpb, val_loss, best_val_bpb, train_loss")
        if self.mode not in MODES:
            bad("mode", self.mode, "min or max")
        if self.searcher not in SEARCHERS:
            bad("searcher", self.searcher, f"one of {', '.join(SEARCHERS)}")
        if self.scheduler not in SCHEDULERS:
            bad("scheduler", self.scheduler, f"one of {', '.join(SCHEDULERS)}")
        if self.threshold is not None and not (
            isinstance(self.threshold, (int, float)) and not isinstance(self.threshold, bool) and 0 < self.threshold < 1
        ):
            bad("threshold", self.threshold, "a fraction in (0, 1), e.g. 0.05 for 5%")
        samples = self.num_samples.values() if isinstance(self.num_samples, dict) else [self.num_samples]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in samples):
            bad("num_samples", self.num_samples, "an integer >= 1, or one per profile")
        if isinstance(self.axes, dict):
            for key, values in self.axes.items():
                if self.searcher == "grid" and (not isinstance(values, list) or not values):
                    bad(f"axes.{key}", values, "a non-empty list of values")
        unknown = set(self.profiles) - set(PROFILE_NAMES)
        if unknown:
            bad("profiles", sorted(unknown)[0], f"one of {', '.join(PROFILE_NAMES)}")
        if isinstance(self.baseline, dict):
            axes = self.axes if isinstance(self.axes, dict) else {}
            for key, value in self.baseline.items():
                if key not in axes:
                    bad(f"baseline.{key}", value, f"an axis of the study ({', '.join(axes) or 'it has none'})")
                if self.searcher == "grid" and value not in axes[key]:
                    bad(f"baseline.{key}", value, f"one of the axis' values {axes[key]}")

    # -- what a profile makes of the study

    def base_keys(self, profile) -> dict:
        if callable(self.base):
            return self.base(profile)
        own = {k: v for k, v in self.profiles.get(profile.name, {}).items() if k not in PROFILE_TABLE_KEYS}
        return {**profile.train_keys(), "budget": None, **self.base, **own}

    def axes_for(self, profile, keys: dict | None = None) -> dict:
        if callable(self.axes):
            return self.axes(profile, keys or {}) if self.keyed_axes else self.axes(profile)
        axes = {**self.axes, **self.profiles.get(profile.name, {}).get("axes", {})}
        return {k: tune_domain(v) for k, v in axes.items()} if self.searcher == "optuna" else axes

    def samples(self, profile) -> int:
        own = self.profiles.get(profile.name, {}).get("num_samples")
        if own is not None:
            return own
        return self.num_samples if isinstance(self.num_samples, int) else self.num_samples.get(profile.name, 1)

    def settable_keys(self, profile) -> set:
        from dataclasses import fields

        from trainables.model import GPTConfig
        from trainables.train import TrainConfig

        keys = {f.name for f in fields(GPTConfig)} | {f.name for f in fields(TrainConfig)}
        own = set(self.base_keys(profile)) | set(self.axes_for(profile)) | set(self.study_keys)
        return keys | own | {"seed"} | set(RUN_KEYS)

    # -- one trial

    def trial_config(self, searched: dict) -> dict:
        """A searched config -> the full flat config its trial trains: the study's own resolve, or the solver."""
        if self.resolve:
            return self.resolve(searched)
        return architecture(searched) if searched.get("budget") is not None else searched

    def arm(self, config: dict) -> str:
        if self.variant:
            return self.variant(config)
        keys = self._arm_keys()
        return ",".join(f"{k}={_text(config.get(k))}" for k in keys) if keys else self.name

    def name_of(self, config: dict) -> str:
        if self.trial_name:
            return self.trial_name(config)
        keys = self._arm_keys()
        parts = [re.sub(r"[^A-Za-z0-9_.+-]", "-", f"{k}-{_text(config.get(k))}") for k in keys]
        return "_".join([self.name, *parts]) + seed_suffix(config)

    @property
    def baseline_arm(self) -> str | None:
        if isinstance(self.baseline, dict):
            return self.arm(self.baseline)
        return self.baseline

    def _arm_keys(self) -> list[str]:
        axes = self.axes if isinstance(self.axes, dict) else {}
        every = dict.fromkeys([*axes, *(k for p in self.profiles.values() for k in p.get("axes", {}))])
        return [k for k in every if k not in SEED_KEYS]


def grid_axes(spec: StudySpec, profile, overrides: dict, seeds: int) -> tuple[dict, dict]:
    """A grid study's constant keys and its axes (seed included), so a plan can be counted before it is expanded.
    An override replaces a key; a list override makes (or replaces) an axis."""
    base = spec.base_keys(profile)
    axes = dict(spec.axes_for(profile, overrides))
    for key, value in overrides.items():
        if isinstance(value, list):
            axes[key] = value
            base.pop(key, None)
        else:
            axes.pop(key, None)
            base[key] = value
    if seeds > 1 or "seed" not in base:
        axes.setdefault("seed", range(seeds))  # a range: a huge --seeds is counted, not built
    return base, axes


def grid_configs(base: dict, axes: dict) -> list[dict]:
    """Every trial's searched config (before resolve), in a stable order: the product of the axes."""
    keys = list(axes)
    return [{**base, **dict(zip(keys, values))} for values in itertools.product(*(axes[k] for k in keys))]


def tune_domain(spec):
    """A study file's distribution -> Tune's domain: {"low", "high"} (+ "log", "int") or {"choices"}."""
    if not isinstance(spec, dict):
        return spec  # a Tune domain already, or a constant
    from ray import tune

    if "choices" in spec:
        return tune.choice(list(spec["choices"]))
    low, high, log, integer = spec["low"], spec["high"], spec.get("log", False), spec.get("int", False)
    if integer:
        return tune.lograndint(low, high + 1) if log else tune.randint(low, high + 1)
    return tune.loguniform(low, high) if log else tune.uniform(low, high)


def _text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
