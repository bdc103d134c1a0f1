"""The named studies: search space + metric + searcher + scheduler + per-profile budgets + report views.

A StudySpec is data. `trial_configs()` expands a grid study into the exact flat configs its trials will
run (the same function the trial driver applies), so --dry-run, validation and the run agree.
"""

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from search_spaces import nanohead, scaling, softmax1, toeplitz, vocab_depth
from study.profiles import PROFILES, Profile

SEARCHERS = ("grid", "optuna")
SCHEDULERS = ("fifo", "asha")


@dataclass(frozen=True, kw_only=True)
class StudySpec:
    name: str
    family: str  # report family: nanohead | softmax1 | toeplitz | vocab_depth | scaling | nanohead_search
    hypothesis: str
    seed_note: str  # the research note in shared/seeds it comes from
    base: Callable[[Profile], dict]  # constant keys of every trial, per profile
    axes: Callable[[Profile], dict]  # grid axes: key -> list of values (Optuna: distributions)
    resolve: Callable[[dict], dict]  # searched config -> the full flat trial config
    variant: Callable[[dict], str]  # arm name, from a resolved config
    trial_name: Callable[[dict], str]  # from a resolved config (grid studies)
    metric: str = "val_bpb"
    mode: str = "min"
    searcher: str = "grid"
    scheduler: str = "fifo"
    baseline: str | None = None  # the variant others are compared against
    num_samples: dict = field(default_factory=lambda: {"smoke": 1, "cpu": 1, "gpu": 1, "paper": 1})
    views: tuple = ()  # report sections beyond the common ones
    study_keys: tuple = ()  # keys that steer the study, not the model (--set-able)
    # key -> (what resolve derives it from, what to set instead): the words of the refusal of a --set that resolve
    # would replace (the check itself is study.run's, for every key; keys not here use study.run.DERIVED_FROM)
    derived: dict = field(default_factory=dict)
    # (planned trials, workers) -> FidelityRows: the note beside this plan, each difference with its reason
    # (search_spaces/fidelity.py); None for a study with no single note
    fidelity: Callable[[list, int], tuple] | None = None

    def settable_keys(self, profile: Profile) -> set:
        from dataclasses import fields

        from trainables.model import GPTConfig
        from trainables.train import TrainConfig

        keys = {f.name for f in fields(GPTConfig)} | {f.name for f in fields(TrainConfig)}
        return keys | set(self.base(profile)) | set(self.axes(profile)) | set(self.study_keys) | {"seed"}


def grid_configs(spec: StudySpec, profile: Profile, overrides: dict, seeds: int) -> list[dict]:
    """Every trial's searched config (before resolve), in a stable order: the product of the axes x seeds."""
    base, axes = grid_axes(spec, profile, overrides, seeds)
    keys = list(axes)
    return [{**base, **dict(zip(keys, values))} for values in itertools.product(*(axes[k] for k in keys))]


def grid_axes(spec: StudySpec, profile: Profile, overrides: dict, seeds: int) -> tuple[dict, dict]:
    """A grid study's constant keys and its axes (seed included), so a plan can be counted before it is expanded.
    An override replaces a key; a list override makes (or replaces) an axis."""
    base = spec.base(profile)
    axes = dict(spec.axes(profile))
    for key, value in overrides.items():
        if isinstance(value, list):
            axes[key] = value
        else:
            axes.pop(key, None)
            base[key] = value
    if seeds > 1 or "seed" not in base:
        axes.setdefault("seed", range(seeds))  # a range: a huge --seeds is counted, not built
    return base, axes


def _grid(axes: dict) -> Callable[[Profile], dict]:
    return lambda profile: dict(axes)


STUDIES = {
    "nanohead_grid": StudySpec(
        name="nanohead_grid",
        family="nanohead",
        seed_note="000_f68f42f0f06710c9.txt, 001_cb10fb95bfa0b62b.txt",
        hypothesis="Mixing tiny heads (dim 2-3, no RoPE) into a GPT improves loss at equal parameters; "
        "moderate proportions (0.2-0.4) help, 0.8 hurts.",
        base=nanohead.base,
        axes=_grid(nanohead.AXES),
        resolve=nanohead.resolve,
        variant=nanohead.variant,
        trial_name=nanohead.trial_name,
        baseline="p00",
        views=("nanohead",),
        fidelity=nanohead.note_vs_run,
    ),
    "nanohead_search": StudySpec(
        name="nanohead_search",
        family="nanohead_search",
        seed_note="000_f68f42f0f06710c9.txt",
        hypothesis="Where in (proportion, nano head dim, depth, learning rate) is the best model, and what does "
        "the val_bpb-vs-parameters Pareto front look like (--set objective=multi)?",
        base=lambda p: {**nanohead.base(p), "objective": "single"},
        axes=nanohead.search_space,
        resolve=nanohead.search_resolve,
        variant=nanohead.variant,
        trial_name=nanohead.trial_name,
        searcher="optuna",
        scheduler="asha",
        num_samples={"smoke": 4, "cpu": 12, "gpu": 40, "paper": 100},
        views=("optuna",),
        study_keys=("objective",),
        fidelity=nanohead.search_note_vs_run,
    ),
    "softmax1_ab": StudySpec(
        name="softmax1_ab",
        family="softmax1",
        seed_note="004_39036d62147a7b75.txt",
        hypothesis="softmax1 (quiet attention) improves perplexity by at least 5% over softmax on the baby GPT "
        "(pre-registered threshold).",
        base=softmax1.base,
        axes=_grid(softmax1.AXES),
        resolve=softmax1.resolve,
        variant=softmax1.variant,
        trial_name=softmax1.trial_name,
        baseline="softmax",
        views=("softmax1",),
        fidelity=softmax1.note_vs_run,
    ),
    "toeplitz_flags": StudySpec(
        name="toeplitz_flags",
        family="toeplitz",
        seed_note="003_dda6ec3c2e766f7d.txt",
        hypothesis="How do the weighted mean and the projections of a multi-head Toeplitz mixer trade quality "
        "for speed, and how much faster is generation with heads in parallel?",
        base=toeplitz.base,
        axes=_grid(toeplitz.AXES),
        resolve=toeplitz.resolve,
        variant=toeplitz.variant,
        trial_name=toeplitz.trial_name,
        baseline="nomean_noproj",
        views=("toeplitz",),
        fidelity=toeplitz.note_vs_run,
    ),
    "vocab_depth": StudySpec(
        name="vocab_depth",
        family="vocab_depth",
        seed_note="002_ae9661a3f257ab4b.txt",
        hypothesis="At a fixed budget split evenly between embedding, lm_head and blocks, which vocabulary size "
        "(and so depth/width) gives the best bits per byte; does tying the embeddings help? Arms: the "
        "note's d29/65536, d4/24576, d7/32768 (scaled down below gpu); lrs by nanochat's width rule "
        "(Muon 0.02; AdamW embedding 0.2, lm_head 0.004, x (width/768)^-0.5); a tied table at the "
        "lm_head's lr.",
        base=vocab_depth.base,
        axes=vocab_depth.axes,
        resolve=vocab_depth.resolve,
        variant=vocab_depth.variant,
        trial_name=vocab_depth.trial_name,
        views=("vocab_depth",),
        derived=vocab_depth.DERIVED,
        fidelity=vocab_depth.note_vs_run,
    ),
    "scaling": StudySpec(
        name="scaling",
        family="scaling",
        seed_note="000_f68f42f0f06710c9.txt (default variant nanohead_p40)",
        hypothesis="Does the variant's advantage (or deficit) hold across parameter budgets? Fit L(N) = E + A N^-alpha "
        "per arm.",
        base=scaling.base,
        axes=scaling.axes,
        resolve=scaling.resolve,
        variant=scaling.variant,
        trial_name=scaling.trial_name,
        baseline="baseline",
        views=("scaling",),
        study_keys=("scaling_variant", "max_tokens_per_param"),
        derived=scaling.DERIVED,
    ),
}


def get_study(name: str) -> StudySpec:
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}: choose one of {', '.join(STUDIES)}")
    return STUDIES[name]


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
