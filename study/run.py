"""python -m study.run STUDY [options]: run a named study, or a study file (NAME.toml, NAME.py), on this
machine or on a Ray cluster; run_study() is the same for a notebook.

Everything a user can get wrong (study, profile, --set keys and values, storage URL, address, data) is
checked before Ray starts: a bad input exits 2 with one line on stderr (run_study: a UsageError) and leaves
results/ untouched. The checks end in one Plan (study, profile, options, trials, resources) that the service runs.
"""

import argparse
import functools
import json
import math
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from search_spaces.spec import DEFAULT_AUDIT_FRACTION, RUN_KEYS, StudySpec, grid_axes, grid_configs
from study.catalog import STUDIES, get_profile, get_study
from study.errors import UsageError
from study.profiles import DEFAULT_PROFILE, PROFILES, Profile
from trainables.timeline import mark, span

# ----------------------------------------------------------------------------- command line


def build_parser(spec: StudySpec | None = None) -> argparse.ArgumentParser:
    description = "Run a named architecture study: every trial a Ray Tune trial running Ray Train DDP."
    epilog = "studies: " + ", ".join(STUDIES) + "\nprofiles: " + ", ".join(PROFILES)
    if spec:
        profile = PROFILES[DEFAULT_PROFILE]
        axes = spec.axes_for(profile)
        description = (
            f"{spec.name}: {spec.hypothesis}\n\nnote: {spec.note or '-'}\nsearcher: {spec.searcher}, "
            f"scheduler: {spec.scheduler}, metric: {spec.metric} ({spec.mode})\naxes: "
            + ", ".join(f"{k}={v if isinstance(v, list) else type(v).__name__}" for k, v in axes.items())
        )
    # allow_abbrev=False: an option is recorded and redacted (--storage) by its full name only
    ap = argparse.ArgumentParser(
        prog="python -m study.run",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    ap.add_argument("study", nargs="?", help="study name (see --list), or a study file: NAME.toml or NAME.py")
    ap.add_argument("--list", action="store_true", help="list the studies and exit")
    ap.add_argument(
        "--profile", default=DEFAULT_PROFILE, help=f"budget: {', '.join(PROFILES)} (default {DEFAULT_PROFILE})"
    )
    ap.add_argument(
        "--dry-run", action="store_true", help="print each trial's config, parameters, tokens and FLOPs; no Ray"
    )
    ap.add_argument(
        "--seeds",
        default=1,
        help="run each config N times with seeds 0..N-1 (grid studies); auto: 2 seeds per arm, then one more per "
        "round to each arm still undecided at --mde D (sequential seeding)",
    )
    ap.add_argument(
        "--max-seeds",
        type=int,
        default=None,
        metavar="K",
        help="--seeds auto: the most seeds an arm gets (default 10)",  # reports.sequential.DEFAULT_MAX_SEEDS (it imports scipy)
    )
    ap.add_argument("--num-samples", type=int, default=None, help="trials an Optuna search runs (default: per profile)")
    ap.add_argument(
        "--max-trials",
        type=int,
        default=MAX_TRIALS,
        help=f"refuse a plan of more trials than this, before building it (default {MAX_TRIALS:,})",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key (a,b,c makes it an axis); repeatable",
    )
    ap.add_argument(
        "--output",
        default="results",
        help="results root: a folder (default results/) or a storage URI (s3://BUCKET/PATH, gs://...)",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted study; a finished Optuna search runs --num-samples more trials",
    )
    ap.add_argument("--address", default=None, help="an existing Ray cluster (host:port, ray://..., or auto)")
    ap.add_argument("--workers-per-trial", type=int, default=None, help="Ray Train workers (DDP ranks) per trial")
    ap.add_argument("--gpus-per-trial", type=int, default=None, help="GPUs per trial (one per worker)")
    ap.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per training worker (default 1)")
    ap.add_argument(
        "--ray-train",
        action="store_true",
        help="run a Ray Train TorchTrainer even for one worker per trial (default: only for 2+ workers)",
    )
    ap.add_argument(
        "--wandb",
        default="offline",
        choices=["offline", "online", "disabled"],
        help="tracking: offline runs in the study dir (default), online needs WANDB_API_KEY",
    )
    ap.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite in the study dir)")
    ap.add_argument(
        "--mde",
        type=float,
        default=None,
        metavar="D",
        help="the seed planner: seeds per arm to detect a difference D in the metric's units (e.g. 0.01 bpb), from "
        "a pilot's noise; printed after the --dry-run table, or before a run",
    )
    ap.add_argument(
        "--pilot",
        default=None,
        metavar="DIR",
        help="an earlier run of the study to measure the noise in (default: OUTPUT/STUDY, with 2+ seeds an arm)",
    )
    ap.add_argument("--power", type=float, default=0.8, help="the planner's target power (default 0.8)")
    ap.add_argument(
        "--alpha", type=float, default=0.05, help="the planner's significance level, before Holm (default 0.05)"
    )
    ap.add_argument("--no-report", action="store_true", help="skip building the report at the end")
    ap.add_argument(
        "--verbose", action="store_true", help="show Ray's own output too (it always goes to the study's driver.log)"
    )
    return ap


def parse_value(text: str):
    """--set values: a,b,c -> list; true/false/none; int; float; else string."""
    if "," in text:
        return [parse_value(t) for t in text.split(",") if t != ""]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_set(items: list[str]) -> dict:
    """--set KEY=VALUE items -> {key: value}; the keys and types are checked against the study (check_overrides)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r}: must be KEY=VALUE")
        out[key] = parse_value(value)
    return out


def check_overrides(spec: StudySpec, profile, overrides: dict) -> dict:
    """Each key must be one the study takes, each value of its field's type; a tuple is an axis, as a list is."""
    allowed = spec.settable_keys(profile)
    out = {}
    for key, value in overrides.items():
        if key not in allowed:
            raise UsageError(f"--set {key}: unknown key for {spec.name}; allowed: {', '.join(sorted(allowed))}")
        out[key] = list(value) if isinstance(value, (list, tuple)) else value
        try:
            check_type(key, out[key])
        except ValueError as e:
            raise UsageError(f"--set {e}") from None
    return out


def check_type(key: str, value):
    """A value must have its field's type (lr=abc would otherwise fail deep inside a comparison): a ValueError
    "KEY=VALUE: must be ..." otherwise."""
    import types
    from dataclasses import fields

    from trainables.model import GPTConfig
    from trainables.train import TrainConfig

    declared = {f.name: f.type for f in fields(GPTConfig) + fields(TrainConfig)}.get(key)
    if declared is None:  # a study's own key: its resolve() checks its range, here only that a number is finite
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{key}={v!r}: must be a finite number")
        return
    declared = set(declared.__args__) if isinstance(declared, types.UnionType) else {declared}
    words = {int: "an integer", float: "a number", bool: "true or false", str: "text", type(None): "none"}
    allowed = declared | ({int} if float in declared else set())
    for v in value if isinstance(value, list) else [value]:
        if type(v) not in allowed:
            raise ValueError(f"{key}={v!r}: must be {' or '.join(words[t] for t in words if t in declared)}")


# ----------------------------------------------------------------------------- planning (no Ray)

MAX_TRIALS = (
    10_000  # planning checks every trial (~1 ms each): a slip like --seeds 100000 stops here, not after minutes
)

# Where the keys every study may derive come from, and what to set instead: the words of the refusal of a --set that
# the plan does not keep. A study's own derivations are in its StudySpec.derived; any other key comes from its own keys.
DERIVED_FROM = {
    **dict.fromkeys(
        ("n_layer", "n_embd", "n_head"),
        (
            "budget, head_dim and aspect_ratio (the solver)",
            "set those instead, or budget=none and n_layer, n_embd, n_head by hand",
        ),
    ),
    "vocab_size": ("the tokenizer (bpe:N has N tokens)", "set tokenizer=bpe:N instead"),
    "seed": (
        "--seeds (seeds 0..N-1)",
        "give --set seed with --seeds 1, or --seeds alone (--set init_seed or data_seed holds one of them still)",
    ),
}
SOLVER_INPUTS = ("head_dim", "aspect_ratio")  # they size a model from a budget, and do nothing without one


def plan_trials(
    spec: StudySpec,
    profile,
    overrides: dict,
    seeds: int,
    workers: int,
    *,
    max_trials: int = MAX_TRIALS,
    address: str | None = None,
) -> list[dict]:
    """Grid studies: every trial's resolved config, validated (GPTConfig/TrainConfig/solver, each --set kept, the
    device) and named. The trials are counted before the grid is expanded."""
    if max_trials < 1:
        raise UsageError(f"--max-trials {max_trials}: must be >= 1")
    base, axes = grid_axes(spec, profile, overrides, seeds)
    count = math.prod(len(values) for values in axes.values())
    if count > max_trials:
        raise UsageError(
            f"{spec.name} would plan {count:,} trials (its axes x --seeds {seeds}): more than --max-trials "
            f"{max_trials:,}; use fewer seeds or axis values, or raise the cap with --max-trials {count}"
        )
    trials, names = [], set()
    for searched in grid_configs(base, axes):
        trial = _planned_trial(spec, searched)
        name = trial["name"] = _checked(lambda: spec.name_of(trial["config"]))
        if name in names:
            raise UsageError(f"two trials would both be named {name!r}: vary an axis or use --seeds")
        names.add(name)
        _check_trial(spec, overrides, trial, workers, name)
        trial["tokens"] = _planned_tokens(trial["train"], trial["gpt"], workers)
        trials.append(trial)
    check_epochs([(t["name"], t["config"], t["train"], t["tokens"]) for t in trials])
    for device in sorted({t["train"].device for t in trials}):
        check_device(device, address)
    return trials


def validate_search(
    spec: StudySpec,
    profile,
    overrides: dict,
    n: int = 16,
    *,
    workers: int = 1,
    num_samples: int | None = None,
    max_trials: int = MAX_TRIALS,
    address: str | None = None,
) -> list[dict]:
    """Optuna studies: draw configs from the space and check they all build, keep each --set and name a device
    that exists (fixed RNG: reproducible). Returns the draws, as plan_trials returns trials."""
    import random

    from ray import tune  # noqa: F401  (the space is made of Tune domains; importing tune starts nothing)

    if max_trials < 1:
        raise UsageError(f"--max-trials {max_trials}: must be >= 1")
    if num_samples is not None and num_samples > max_trials:
        raise UsageError(
            f"--num-samples {num_samples:,}: more than --max-trials {max_trials:,}; ask for fewer, or raise "
            f"the cap with --max-trials {num_samples}"
        )
    base, space = search_space(spec, profile, overrides)
    rng = random.Random(0)
    draws = []
    for _ in range(n):
        drawn = {
            k: (v.sample(random_state=rng.randint(0, 2**31)) if hasattr(v, "sample") else v) for k, v in space.items()
        }
        trial = _planned_trial(spec, {**base, **drawn})
        _check_trial(spec, overrides, trial, workers, None)
        draws.append(trial)
    for device in sorted({d["train"].device for d in draws}):
        check_device(device, address)
    return draws


def search_space(spec: StudySpec, profile, overrides: dict) -> tuple[dict, dict]:
    """An Optuna study's constant keys (with every --set) and the space its searcher draws the rest from."""
    keys = {k: v for k, v in overrides.items() if k not in RUN_KEYS}  # they steer the run, not a trial
    return {**spec.base_keys(profile), **keys}, {k: v for k, v in spec.axes_for(profile).items() if k not in overrides}


def _planned_trial(spec: StudySpec, searched: dict) -> dict:
    """One searched config, resolved (spec.trial_config: the one place a study's resolve runs before its trial
    does) and built into its GPTConfig and TrainConfig, each step's error as a UsageError."""
    from search_spaces.common import tokenizer_vocab_size
    from trainables.train import TrainConfig, resolve_configs

    _checked(lambda: TrainConfig.from_dict(searched))  # ranges first: the study derives dims from budget, head_dim
    config = _checked(lambda: spec.trial_config(searched))
    gpt, tc = _checked(lambda: resolve_configs(config, tokenizer_vocab_size(config["tokenizer"])))
    return dict(searched=searched, config=config, gpt=gpt, train=tc)


def _check_trial(spec: StudySpec, overrides: dict, trial: dict, workers: int, name: str | None):
    """What only a whole trial shows: each --set holds in the model and training it builds (a key the study derives
    would be silently replaced), and its batch splits into micro-steps."""
    searched, config, gpt, tc = trial["searched"], trial["config"], trial["gpt"], trial["train"]
    built = {**vars(tc), **vars(gpt)}
    where = f"trial {name}" if name else "a drawn trial"
    for key, value in overrides.items():
        value = searched[key] if isinstance(value, list) else value  # an axis: this trial's value of it
        if key in SOLVER_INPUTS and searched.get("budget") is None:
            raise UsageError(
                f"--set {key}={value}: {key} sizes a model from a budget, and {spec.name}'s trials have "
                f"none (budget=none); set n_layer, n_embd and n_head instead, or a budget"
            )
        # None asks for a field's default (n_kv_head=None: n_head); a key gone from the config was consumed by the
        # study to derive others (budget, vocab_depth's vocab_size)
        if key not in built or key not in config or value is None or built[key] == value:
            continue
        own = f"its own keys ({', '.join(spec.study_keys)})" if spec.study_keys else "its axes"
        source, instead = spec.derived.get(key) or DERIVED_FROM.get(key) or (own, "set those instead")
        raise UsageError(
            f"--set {key}={value}: {spec.name} derives {key} from {source}, so {where} gets {built[key]!r}; {instead}"
        )
    per_micro = tc.batch_size * gpt.seq_len * workers
    if tc.total_batch_tokens and tc.total_batch_tokens % per_micro:
        raise UsageError(
            f"TrainConfig.total_batch_tokens={tc.total_batch_tokens}: must be a multiple of batch_size x "
            f"seq_len x workers = {tc.batch_size} x {gpt.seq_len} x {workers} = {per_micro}"
        )


def _checked(fn):
    try:
        return fn()
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(str(e).splitlines()[0] if str(e) else repr(e)) from None


def _describe_domain(domain) -> str:
    """A Tune search domain in words: uniform [0.0, 0.8), choice of [2, 3, 4, 5], ..."""
    if hasattr(domain, "categories"):
        return f"choice of {list(domain.categories)}"
    if hasattr(domain, "lower"):
        sampler = type(domain.get_sampler()).__name__.strip("_").lower()
        kind = "integer" if type(domain).__name__ == "Integer" else "number"
        return f"{kind}, {sampler} in [{domain.lower:g}, {domain.upper:g})"
    return repr(domain)


def _tokens_per_step(tc, gpt, workers: int) -> int:
    from trainables.train import RunSizes

    return RunSizes.plan(tc, gpt, workers).tokens_per_step


def _planned_tokens(tc, gpt, workers: int) -> int:
    from trainables.train import RunSizes

    sizes = RunSizes.plan(tc, gpt, workers)  # as the run divides its tokens
    return sizes.max_steps * sizes.tokens_per_step


@functools.cache
def _corpus_train_tokens(source: str, tokenizer: str, cache: str) -> tuple[int, bool] | None:
    """(train tokens, exact) of a corpus under a tokenizer, without tokenizing it; None for a hub corpus not fetched."""
    from trainables.data.tokens import train_tokens

    return _checked(lambda: train_tokens(source, tokenizer, cache))


def _epochs(config: dict, tokens: int) -> tuple[float, int, bool] | None:
    """(epochs, train tokens, exact): how many passes over its corpus' train split a trial's tokens make."""
    from trainables.data._cache import cache_root

    known = _corpus_train_tokens(config.get("corpus", "wiki"), config["tokenizer"], str(cache_root()))
    return None if known is None else (tokens / known[0], *known)


def _epochs_text(epochs: tuple[float, int, bool] | None) -> str:
    if epochs is None:
        return "?"  # a hub corpus not fetched yet: its size is known once prepare_data has it
    value, _, exact = epochs
    return ("" if exact else "~") + (f"{value:.2f}" if value < 10 else f"{value:,.0f}")


def _corpora_text(configs: list[dict]) -> str:
    """Each corpus' train tokens under each tokenizer, as the epochs column divides by them."""
    sizes = {(c.get("corpus", "wiki"), c["tokenizer"]): _epochs(c, 1) for c in configs}
    text = "; ".join(
        f"{corpus} with {tokenizer}: " + ("?" if e is None else f"{'' if e[2] else '~'}{e[1]:,}")
        for (corpus, tokenizer), e in sorted(sizes.items())
    )
    notes = ["~ estimated from its bytes"] * any(e and not e[2] for e in sizes.values()) + [
        "? a hub corpus not fetched yet, counted when the run fetches it"
    ] * (None in sizes.values())
    return text + (f" ({'; '.join(notes)})" if notes else "")


def check_epochs(planned: list[tuple[str, dict, object, int]]):
    """(name, config, TrainConfig, tokens) of each trial: a plan over max_epochs passes of its corpus measures
    memorisation, so it is refused, naming the trial that loops most. An estimate (~) counts as the figure."""
    over = [
        (e[0] / tc.max_epochs, name, config, tc, tokens, e)
        for name, config, tc, tokens in planned
        if (e := _epochs(config, tokens)) is not None and e[0] > tc.max_epochs
    ]
    if over:
        _refuse_epochs(*max(over, key=lambda o: o[0])[1:])


def _refuse_epochs(name: str, config: dict, tc, tokens: int, e: tuple[float, int, bool]):
    raise UsageError(
        f"{name} plans {tokens:,} tokens: {_epochs_text(e)} epochs of corpus {config.get('corpus', 'wiki')!r} "
        f"({'' if e[2] else '~'}{e[1]:,} train tokens with {config['tokenizer']}), more than max_epochs="
        f"{tc.max_epochs:g}, so it would measure memorisation; give a bigger corpus (--set corpus=...), "
        f"fewer tokens, or --set max_epochs={math.ceil(e[0])}"
    )


def print_dry_run(spec: StudySpec, trials: list[dict]):
    from trainables.model import count_params, flops_per_token, nanohead_split

    variants = [spec.arm({**t["config"], **t["gpt"].to_dict()}) for t in trials]
    tw, vw = max([34, *(len(t["name"]) for t in trials)]), max([14, *map(len, variants)])  # long names stay aligned
    matched = any(t["config"].get("match") == "flops" for t in trials)  # a compute-matched plan: C and D/N too
    header = f"{'trial':{tw}} {'variant':{vw}} {'L':>3} {'width':>5} {'heads':>5} {'nano':>6} {'vocab':>6} {'params':>11} {'embed':>10} {'lm_head':>10} {'blocks':>11} {'tokens':>11} {'epochs':>7} {'FLOPs':>9}"
    header += f" {'C=6ND':>9} {'D/N':>6}" if matched else ""
    print(f"{spec.name}: {len(trials)} trials\n{header}\n{'-' * len(header)}")
    for t, variant in zip(trials, variants):
        g = t["gpt"]
        p = count_params(g)
        flops = flops_per_token(g) * t["tokens"]
        split = nanohead_split(g) if g.mixer == "attention" else None
        nano = f"{split.n_nano}x{split.nano_dim}" if split and split.n_nano else "-"  # nano heads x their dim
        print(
            f"{t['name']:{tw}} {variant:{vw}} {g.n_layer:>3} {g.n_embd:>5} {g.n_head:>5} {nano:>6} "
            f"{g.vocab_size:>6} {p['total']:>11,} {p['embedding']:>10,} {p['lm_head']:>10,} {p['blocks']:>11,} "
            f"{t['tokens']:>11,} {_epochs_text(_epochs(t['config'], t['tokens'])):>7} {flops:>9.2e}"
            + (f" {6 * p['total'] * t['tokens']:>9.3g} {t['tokens'] / p['total']:>6.1f}" if matched else "")
        )
    print("\nepochs = tokens / train tokens of the corpus: " + _corpora_text([t["config"] for t in trials]))
    if matched:
        print(
            "match=flops: N = params (all of them, embeddings included), D = tokens (whole steps), C = 6 N D: the "
            "compute each budget matches and the fit uses; FLOPs = D x the model's flops_per_token (6 x its matmul "
            "weights, no input embedding, + attention), for the cost"
        )
    axes = sorted({k for t in trials for k in t["searched"] if len({str(u["searched"].get(k)) for u in trials}) > 1})
    if axes:
        print("\naxes: " + "; ".join(f"{k} = {sorted({str(t['searched'][k]) for t in trials})}" for k in axes))


# ----------------------------------------------------------------------------- the note vs this run


def note_vs_run(spec: StudySpec, profile, overrides: dict, seeds: int | str, workers: int, trials: list[dict]) -> dict:
    """study.json's "fidelity": the study's note beside this plan (spec.fidelity), each difference with its reason.
    A row that this run changes from the paper profile's plan (another profile, a --set, --seeds, more workers)
    names the change and the paper profile's value; of its own reason it keeps only one the paper profile gives too."""
    if spec.fidelity is None and spec.source:
        return dict(
            note=spec.note or None,
            rows=[],
            text=f"{spec.name} is a study of your own ({spec.source_name}): "
            f"no research note's settings to compare against",
        )
    if spec.fidelity is None:
        return dict(
            note=None,
            rows=[],
            text=f"{spec.name} has no single note: it runs a variant from one note "
            f"(--set scaling_variant) beside the baseline at parameter (or, with --set match=flops, compute) budgets that no note ran; each variant's "
            f"own study lists its note's settings (e.g. nanohead_grid --profile paper --dry-run)",
        )
    rows = spec.fidelity(_fidelity_trials(trials, workers), workers)
    changes = (
        ([f"--profile {profile.name}"] if profile.name != "paper" else [])
        + [f"--set {k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in sorted(overrides.items())]
        + ([f"--seeds {seeds}"] if seeds != 1 else [])
        + ([f"--workers-per-trial {workers}"] if workers != 1 else [])
    )
    text = None
    if changes:
        paper = PROFILES["paper"]
        try:
            planned = (
                plan_trials(spec, paper, {}, 1, 1) if spec.searcher == "grid" else validate_search(spec, paper, {})
            )
            default = {r.aspect: r for r in spec.fidelity(_fidelity_trials(planned, 1), 1)}
        except UsageError as e:
            default, text = (
                {},
                f"(the paper profile's plan could not be built here: {e}; each reason is the paper profile's)",
            )

        def changed(r, paper):  # a reason the paper profile gives too is not about the changed value: it stays
            kept = f"; {r.reason}" if r.reason and r.reason == paper.reason else ""
            return replace(r, reason=f"changed by {', '.join(changes)}; the paper profile runs: {paper.this_run}{kept}")

        rows = [
            r if r.aspect not in default or default[r.aspect].this_run == r.this_run else changed(r, default[r.aspect])
            for r in rows
        ]
    return dict(note=spec.note, rows=[asdict(r) for r in rows], **({"text": text} if text else {}))


def _fidelity_trials(trials: list[dict], workers: int) -> list[dict]:
    """Planned trials (or Optuna draws) with their tokens and tokens per step, as the rows read them."""
    return [
        dict(
            t,
            tokens=_planned_tokens(t["train"], t["gpt"], workers),
            per_step=_tokens_per_step(t["train"], t["gpt"], workers),
        )
        for t in trials
    ]


def print_note_vs_run(fidelity: dict, width: int = 118):
    import textwrap

    rows = fidelity["rows"]
    if not rows:
        print(f"\nnote vs this run: {fidelity['text']}")
        return
    print(
        f"\nnote vs this run ({fidelity['note']}): {len(rows)} aspects, {sum(bool(r['reason']) for r in rows)} differ"
    )
    if fidelity.get("text"):
        print(fidelity["text"])
    pad = max(len(r["aspect"]) for r in rows) + 2
    for r in rows:
        for i, (label, text) in enumerate(
            (("note", r["note"]), ("this run", r["this_run"]), ("differs", r["reason"] or "no"))
        ):
            head = f"{r['aspect'] if i == 0 else '':{pad}}{label + ':':10}"
            print(
                textwrap.fill(
                    text,
                    width,
                    initial_indent=head,
                    subsequent_indent=" " * len(head),
                    break_on_hyphens=False,
                    break_long_words=False,
                )
            )


# ----------------------------------------------------------------------------- checks of the environment


def check_storage(url: str | None):
    if url is None:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(
            f"--storage {url!r}: not a database URL; use e.g. sqlite:///optuna.db or postgresql://user@host/db"
        ) from None
    try:
        parsed.get_dialect()  # the dialect only, not its driver (a --dry-run may check a URL meant for a cluster)
    except ArgumentError:  # NoSuchModuleError: no such dialect
        raise UsageError(
            f"--storage {parsed.render_as_string(hide_password=True)}: unknown database kind "
            f"{parsed.drivername!r}; use sqlite:///PATH, postgresql://..., mysql://... (any SQLAlchemy URL)"
        ) from None


def check_storage_reachable(url: str | None):
    """Before a run (not a dry run): Optuna opens the storage only once Ray runs and the study dir exists, so
    load the driver now and check the database can be reached (sqlite: its folder); a bad URL changes nothing."""
    if url is None:
        return
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    try:
        engine = create_engine(
            parsed, **({"connect_args": {"connect_timeout": 5}} if backend in ("postgresql", "mysql") else {})
        )
    except ImportError as e:
        raise UsageError(
            f"--storage {shown}: the {parsed.drivername} driver is not installed ({e}); install it or "
            f"use sqlite:///PATH"
        ) from None
    if backend == "sqlite":
        folder = Path(parsed.database or ".").expanduser().resolve().parent
        if parsed.database not in (None, "", ":memory:") and not folder.is_dir():
            raise UsageError(f"--storage {shown}: the folder {folder} does not exist; create it or use another path")
        return
    try:
        engine.connect().close()
    except DBAPIError as e:
        reason = str(e.orig).strip().splitlines()[0] if e.orig else type(e).__name__
        raise UsageError(f"--storage {shown}: cannot connect ({reason}); is the database server running?") from None
    finally:
        engine.dispose()


def redacted_argv(argv: list[str]) -> list[str]:
    """The command line as it may be printed or recorded (study.submit, the resume hint, driver.log): a
    database password in --storage shows as ***."""
    out, after_storage = [], False
    for a in argv:
        value = a.split("=", 1)[1] if a.startswith("--storage=") else a if after_storage else None
        if value is not None and "@" in value and "://" in value:
            from sqlalchemy.engine import make_url

            try:
                safe = make_url(value).render_as_string(hide_password=True)
            except Exception:
                safe = "<storage URL>"
            a = f"--storage={safe}" if a.startswith("--storage=") else safe
        out.append(a)
        after_storage = a == "--storage"
    return out


OUTPUT_URI_HELP = "a folder, or a storage URI such as s3://BUCKET/PATH, gs://BUCKET/PATH, abfs://CONTAINER/PATH"
OUTPUT_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")  # pyarrow.fs.FileSystem.from_uri's
# The query options of pyarrow's S3, GCS, Azure and HDFS from_uri that never hold a secret; anything else
# (client_secret, a SAS token's sig, ...) may, and would be copied wherever --output is recorded.
OUTPUT_URI_OPTIONS = {
    "region",
    "scheme",
    "endpoint_override",
    "allow_bucket_creation",
    "allow_bucket_deletion",
    "allow_delayed_open",
    "tls_ca_file_path",
    "tls_ca_dir_path",
    "tls_verify_certificates",
    "smart_defaults",
    "location",
    "retry_limit_seconds",
    "blob_storage_authority",
    "dfs_storage_authority",
    "blob_storage_scheme",
    "dfs_storage_scheme",
    "enable_tls",
    "background_writes",
    "credential_kind",
    "replication",
    "buffer_size",
    "default_block_size",
}


def check_output(output: str) -> str:
    """--output: a folder, returned absolute (every later step sees the same place), or a storage URI,
    returned unchanged and checked by its form alone: a --dry-run makes no network call (pyarrow's s3
    from_uri asks AWS for the bucket's region). file:// URIs become plain paths."""
    from urllib.parse import parse_qsl, urlsplit

    from trainables.storage import is_uri

    if output.startswith("file://"):
        output = output[len("file://") :]
    if not is_uri(output):
        return check_folder(output, "--output")
    try:
        parts = urlsplit(output)
        query = parse_qsl(parts.query, keep_blank_values=True)
        host = parts.hostname or ""
    except ValueError as e:
        raise UsageError(f"--output: not a storage URI ({e}); give {OUTPUT_URI_HELP}") from None
    shown = f"{parts.scheme}://{host}..."  # never the user-info or the query: either may hold a secret
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else None
    # abfs names the container as user-info (container@account.dfs.core.windows.net); elsewhere it is a key
    if userinfo is not None and (":" in userinfo or parts.scheme not in ("abfs", "abfss")):
        raise UsageError(
            f"--output {shown}: credentials in the URI would be written into study.json, the job list "
            f"and the logs; put them in the environment (AWS_ACCESS_KEY_ID, ...)"
        )
    unsafe = sorted({key for key, _ in query} - OUTPUT_URI_OPTIONS)
    if unsafe:
        raise UsageError(
            f"--output {shown}: the URI option(s) {', '.join(unsafe)} may hold credentials, which would be "
            f"written into study.json and the logs; put them in the environment (AWS_*, AZURE_*, ...); "
            f"allowed options: region, endpoint_override, scheme and pyarrow's other non-secret ones"
        )
    if parts.scheme not in OUTPUT_SCHEMES:
        raise UsageError(
            f"--output {shown}: unknown storage scheme {parts.scheme!r} (known: "
            f"{', '.join(OUTPUT_SCHEMES)}); give {OUTPUT_URI_HELP}"
        )
    if (not host and parts.scheme not in ("hdfs", "viewfs")) or not (host + parts.path).strip("/"):
        raise UsageError(f"--output {output}: no bucket or path after the scheme; give {OUTPUT_URI_HELP}")
    return output


def check_folder(path: str, option: str) -> str:
    """A local folder to write into, made absolute: it, or its nearest existing parent, must be a folder this
    user can write. Nothing is created here, so a refused path leaves no trace."""
    folder = os.path.abspath(os.path.expanduser(path))
    real = os.path.realpath(folder)
    if any(real == top or real.startswith(top + "/") for top in ("/proc", "/sys")):
        # kernel filesystems: root passes os.access there, yet they hold no files of ours
        raise UsageError(
            f"{option} {path}: {real} is in a kernel filesystem (/proc, /sys); give a folder for the results"
        )
    existing = folder
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{option} {path}: {existing} exists and is not a folder; give a folder (new or existing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(
            f"{option} {path}: cannot write in {existing} (permission denied); give a folder you can write"
        )
    return folder


def check_output_reachable(output: str):
    """Before a run: a URI's bucket (or container) must exist and these credentials must reach it."""
    from trainables.storage import is_uri, open_location

    if not is_uri(output):
        return
    import pyarrow.fs as pafs

    try:
        fs, path = open_location(output)  # only here: for s3 without ?region= this asks AWS for the bucket's region
    except (ValueError, OSError) as e:
        raise UsageError(f"--output {output}: {str(e).splitlines()[0][:300]}; give {OUTPUT_URI_HELP}") from None
    bucket = path.split("/")[0]
    try:
        info = fs.get_file_info(bucket)
    except OSError as e:
        raise UsageError(
            f"--output {output}: cannot reach the storage ({str(e).splitlines()[0][:300]}); check the "
            f"credentials and endpoint in the environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, ...)"
        ) from None
    if info.type == pafs.FileType.NotFound:
        raise UsageError(
            f"--output {output}: the bucket {bucket!r} does not exist (or these credentials cannot see "
            f"it); create it first"
        )


def check_address(address: str | None):
    """Fails fast (exit 2) on an address nothing listens on, before any Ray call could hang on it."""
    if address in (None, "auto", "local"):
        if (
            address == "auto" and not os.environ.get("RAY_ADDRESS") and not local_cluster_running()
        ):  # Ray Jobs set RAY_ADDRESS
            raise UsageError(
                "--address auto: no Ray cluster is running on this machine; start one with "
                "`ray start --head` or omit --address to start a local one"
            )
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address!r}: must be host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise UsageError(f"--address {address}: cannot connect ({e.strerror or e}); is the Ray head running?") from None


def check_local_resources(profile, workers: int, gpus: int, cpus_per_worker: float):
    """A local cluster is this machine: a trial asking for more than it has would wait forever, not fail."""
    if gpus > 0:
        import torch

        have = torch.cuda.device_count()
        if have < workers:
            raise UsageError(
                f"{gpus} GPU per trial (--gpus-per-trial, or the {profile.name} profile's default) for "
                f"{workers} worker(s): this machine has {have} GPU(s); use --gpus-per-trial 0, a smaller "
                f"--workers-per-trial, or --address a cluster with GPUs"
            )
    have = os.cpu_count() or 1
    if workers * cpus_per_worker > have:
        raise UsageError(
            f"--workers-per-trial {workers} x --cpus-per-worker {cpus_per_worker:g} needs "
            f"{workers * cpus_per_worker:g} CPUs per trial: this machine has {have}; ask for fewer or "
            f"--address a larger cluster"
        )


def check_device(device: str, address: str | None):
    """A trial's device must exist where it runs. A local run's trials run on this machine; with --address they run
    on the cluster's nodes, which the driver cannot see, so there only the device's form is checked (TrainConfig)."""
    if address not in (None, "local") or device in ("auto", "cpu"):
        return
    import torch

    n = torch.cuda.device_count()
    mps = torch.backends.mps.is_available()
    index = int(device.partition(":")[2] or 0) if device.startswith("cuda") else None
    if (index is not None and index < n) or (device == "mps" and mps):
        return
    have = (
        ["auto", "cpu"]
        + ([f"cuda, cuda:0{f'..cuda:{n - 1}' if n > 1 else ''}"] if n else [])
        + (["mps"] if mps else [])
    )
    raise UsageError(
        f"device={device}: not on this machine ({n} CUDA device(s){', mps' if mps else ', no mps'}); use "
        f"{', '.join(have)}, or --address a cluster whose nodes have it"
    )


def local_cluster_running() -> bool:
    """Whether a cluster that `ray start` left on this machine (ray_current_cluster names it) answers."""
    import tempfile

    marker = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if not marker.exists():
        return False
    host, _, port = marker.read_text().strip().rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except (OSError, ValueError):
        return False


def check_corpora(configs: list[dict]):
    """Each corpus a trial names can be read and split, checked for a --dry-run too (no tokenizing)."""
    from trainables.data import check_corpus

    for source in sorted({c.get("corpus", "wiki") for c in configs}):
        _checked(lambda: check_corpus(source))


def prepare_data(configs: list[dict]):
    """Tokenizers and token shards, once per (corpus, tokenizer), before any trial starts."""
    from trainables.data import prepare_tokens
    from trainables.train import resolve_configs

    prepared = {}
    for c in configs:
        key = (c.get("corpus", "wiki"), c["tokenizer"])
        if key not in prepared:
            t0 = time.time()
            data = prepared[key] = _checked(lambda: prepare_tokens(*key))
            print(
                f"data: {key[0]} / {key[1]}: {data.n_train_tokens:,} train + {data.n_val_tokens:,} val tokens "
                f"({time.time() - t0:.1f}s)",
                flush=True,
            )
        # The plan could not count a hub corpus it had not fetched: the same check, now on the prepared shards.
        # Tokens at one worker are no more than the plan's (workers add tokens per step): it refuses only what the plan would.
        gpt, tc = _checked(lambda: resolve_configs(c, prepared[key].vocab_size))
        tokens, n_train = _planned_tokens(tc, gpt, 1), prepared[key].n_train_tokens
        if tokens / n_train > tc.max_epochs:
            _refuse_epochs("a trial", c, tc, tokens, (tokens / n_train, n_train, True))


# ----------------------------------------------------------------------------- the plan and the run


@dataclass(kw_only=True)
class RunOptions:
    """What a run is asked for: the command line's options, run_study's keyword arguments (same names)."""

    profile: str = DEFAULT_PROFILE
    dry_run: bool = False
    seeds: int | str = 1  # or "auto": sequential seeding (reports.sequential), up to max_seeds
    max_seeds: int | None = None
    num_samples: int | None = None
    max_trials: int = MAX_TRIALS
    set: dict = field(default_factory=dict)  # key -> value; a list makes (or replaces) an axis
    output: str = "results"
    resume: bool = False
    address: str | None = None
    workers_per_trial: int | None = None
    gpus_per_trial: int | None = None
    cpus_per_worker: float = 1.0
    ray_train: bool = False
    wandb: str = "offline"
    storage: str | None = None
    no_report: bool = False
    verbose: bool = False
    mde: float | None = None  # the seed planner's difference to detect (study.seeds), in the metric's units
    pilot: str | None = None  # the planner's earlier run (default: the study's own results folder)
    power: float = 0.8
    alpha: float = 0.05


@dataclass(kw_only=True)
class Plan:
    """Everything a run needs, checked: built by make_plan before Ray starts and handed to the service."""

    spec: StudySpec
    profile: Profile
    options: RunOptions
    overrides: dict  # the checked --set values
    workers: int  # Ray Train workers (DDP ranks) per trial
    gpus: int  # GPUs per trial
    base: dict  # every trial's constant keys
    axes: dict  # grid: the axes (seed included); Optuna: the space
    trials: list[dict]  # grid: every trial, named and resolved; Optuna: the draws that checked the space
    fidelity: dict  # the note beside this run (study.json's "fidelity")
    seed_plan: object = None  # --mde: the seed planner's line and record
    deviations: list = field(default_factory=list)  # departures from the registered plan that this run makes

    @property
    def audit_fraction(self) -> float:
        """The share of trials ASHA may never stop: --set audit_fraction, else 0.1 with ASHA, else 0."""
        default = DEFAULT_AUDIT_FRACTION if self.spec.scheduler == "asha" else 0.0
        return float(self.overrides.get("audit_fraction", default))

    @property
    def num_samples(self) -> int:
        return self.options.num_samples or self.spec.samples(self.profile)

    @property
    def sequential(self) -> bool:
        return self.options.seeds == "auto"

    @property
    def confirm(self) -> tuple[int, int]:
        """(configs, seeds) an Optuna search re-runs after it ends; (0, 0): none."""
        top = self.overrides.get("confirm_top", 0)
        return (top, self.overrides.get("confirm_seeds", DEFAULT_CONFIRM_SEEDS)) if top else (0, 0)

    def command(self, resume: bool = False) -> list[str]:
        """The command line that runs this plan (the study by name: a study file's copy is in its study.json)."""
        o, default = self.options, RunOptions()
        argv = [self.spec.name, "--profile", self.profile.name]
        for key, value in sorted(self.overrides.items()):
            argv += ["--set", f"{key}={','.join(map(_text, value)) if isinstance(value, list) else _text(value)}"]
        for name in (
            "seeds",
            "max_seeds",
            "num_samples",
            "workers_per_trial",
            "gpus_per_trial",
            "cpus_per_worker",
            "address",
            "mde",
            "pilot",
            "power",
            "alpha",
        ):
            if getattr(o, name) != getattr(default, name):
                argv += [f"--{name.replace('_', '-')}", str(getattr(o, name))]
        argv += ["--output", str(o.output)] + ["--ray-train"] * o.ray_train + ["--resume"] * resume
        return argv


def _text(value) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def make_plan(spec: StudySpec, options: RunOptions) -> Plan:
    """Checks every option against the study and plans its trials (no Ray): a UsageError names what is wrong."""
    profile = _checked(lambda: get_profile(options.profile))
    options = replace(options, seeds=check_seeds(options, spec))
    if options.num_samples is not None and options.num_samples < 1:
        raise UsageError(f"--num-samples {options.num_samples}: must be >= 1")
    check_confirm(spec, options)
    if options.storage and spec.searcher != "optuna":
        raise UsageError(
            f"--storage: {spec.name} uses no Optuna storage; it applies to Optuna searches "
            f"({', '.join(s for s in STUDIES if STUDIES[s].searcher == 'optuna')})"
        )
    if options.wandb not in ("offline", "online", "disabled"):
        raise UsageError(f"--wandb {options.wandb!r}: must be offline, online or disabled")
    from study.seeds import check_planner_options, seed_plan

    check_planner_options(options, spec.metric)
    workers = profile.workers_per_trial if options.workers_per_trial is None else options.workers_per_trial
    gpus = profile.gpus_per_trial if options.gpus_per_trial is None else options.gpus_per_trial
    if workers < 1:
        raise UsageError(f"--workers-per-trial {workers}: must be >= 1")
    if gpus < 0:
        raise UsageError(f"--gpus-per-trial {gpus}: must be >= 0")
    if not options.cpus_per_worker > 0:
        raise UsageError(f"--cpus-per-worker {options.cpus_per_worker}: must be > 0")
    overrides = check_overrides(spec, profile, options.set)
    check_audit_fraction(spec, overrides)
    run_keys, overrides = overrides, {k: v for k, v in overrides.items() if k not in RUN_KEYS}  # trial keys only
    if "objective" in spec.study_keys and overrides.get("objective", "single") not in ("single", "multi"):
        raise UsageError(f"--set objective={overrides['objective']!r}: must be single or multi")
    if spec.searcher == "optuna" and options.seeds > 1 and "seed" in overrides:
        source, instead = DERIVED_FROM["seed"]
        raise UsageError(
            f"--set seed={overrides['seed']}: with --seeds {options.seeds} each trial's runs take {source}; {instead}"
        )
    check_storage(options.storage)
    options = replace(options, output=check_output(options.output))
    check_mixers(spec, profile, overrides)
    seeds = planned_seeds(options)
    if spec.searcher == "grid":
        base, axes = grid_axes(spec, profile, overrides, seeds)
        trials = plan_trials(
            spec, profile, overrides, seeds, workers, max_trials=options.max_trials, address=options.address
        )
    else:
        base, axes = search_space(spec, profile, overrides)
        if options.seeds > 1:  # one trial trains its config with seeds 0..N-1 and reports their mean
            base["seeds"] = options.seeds
        trials = validate_search(
            spec,
            profile,
            overrides,
            workers=workers,
            num_samples=options.num_samples or spec.samples(profile),
            max_trials=options.max_trials,
            address=options.address,
        )
    check_corpora([t["config"] for t in trials])  # an Optuna space varies no corpus or tokenizer: the draws name them
    shown_seeds = f"auto (up to {seeds})" if options.seeds == "auto" else seeds
    fidelity = note_vs_run(spec, profile, overrides, shown_seeds, workers, trials)
    plan = Plan(
        spec=spec,
        profile=profile,
        options=options,
        overrides=run_keys,  # every --set as given (audit_fraction too): the plan's command and the resume check
        workers=workers,
        gpus=gpus,
        base=base,
        axes=axes,
        trials=trials,
        fidelity=fidelity,
    )
    if options.mde is not None:
        plan.seed_plan = seed_plan(plan)
        if plan.sequential and plan.seed_plan.record.get("seeds_needed") is None:
            plan.seed_plan = None  # --seeds auto needs no pilot: its rounds measure the noise as they go
    return plan


def check_seeds(options: RunOptions, spec: StudySpec) -> int | str:
    """--seeds as a count, or "auto" (sequential seeding, which needs --mde and a baseline); --max-seeds with it."""
    seeds = options.seeds
    if isinstance(seeds, str) and seeds.strip().isdigit():
        seeds = int(seeds)
    if seeds != "auto" and not (isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1):
        raise UsageError(f"--seeds {seeds}: must be a whole number >= 1, or auto")
    if seeds != "auto":
        if options.max_seeds is not None:
            raise UsageError(f"--max-seeds {options.max_seeds}: it caps --seeds auto; give --seeds auto with it")
        return seeds
    if spec.searcher != "grid":
        raise UsageError(f"--seeds auto: {spec.name} is an Optuna search; sequential seeding applies to grid studies")
    if options.mde is None:
        raise UsageError(
            "--seeds auto needs --mde D: the difference in the metric's units below which an arm counts as no "
            "different from the baseline (e.g. --mde 0.01)"
        )
    if not spec.baseline_arm:
        raise UsageError(f"--seeds auto: {spec.name} names no baseline arm, so no comparison decides its seeds")
    from reports.sequential import MIN_SEEDS

    if options.max_seeds is not None and options.max_seeds < MIN_SEEDS + 1:
        raise UsageError(
            f"--max-seeds {options.max_seeds}: must be >= {MIN_SEEDS + 1} (the first round runs {MIN_SEEDS} seeds)"
        )
    return "auto"


def planned_seeds(options: RunOptions) -> int:
    """The seeds every config is planned with: --seeds, or under --seeds auto the cap (the rounds run some)."""
    from reports.sequential import DEFAULT_MAX_SEEDS

    return (options.max_seeds or DEFAULT_MAX_SEEDS) if options.seeds == "auto" else options.seeds


def check_audit_fraction(spec: StudySpec, overrides: dict):
    """--set audit_fraction=F: a number in [0, 1), and above 0 only where ASHA stops trials early."""
    if "audit_fraction" not in overrides:
        return
    f = overrides["audit_fraction"]
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
        raise UsageError(
            f"--set audit_fraction={_text(f) if not isinstance(f, list) else ','.join(map(_text, f))}: must be a "
            f"number in [0, 1), the share of trials ASHA may never stop (0 turns the audit off)"
        )
    if f > 0 and spec.scheduler != "asha":
        raise UsageError(
            f"--set audit_fraction={f:g}: {spec.name} stops no trial early (scheduler {spec.scheduler}, not asha), "
            f"so there is nothing to audit"
        )


DEFAULT_CONFIRM_SEEDS = 3


def check_confirm(spec: StudySpec, options: RunOptions):
    """--set confirm_top=K (>= 0; 0: off) and confirm_seeds=M (>= 1, with K >= 1): an Optuna search's re-run of
    its K best configs with M seeds each, after the search."""
    given = {k: options.set[k] for k in ("confirm_top", "confirm_seeds") if k in options.set}
    if given and spec.searcher != "optuna":
        key = next(iter(given))
        raise UsageError(
            f"--set {key}: {spec.name} is a grid study, whose configs all run with --seeds; confirm_top and "
            f"confirm_seeds re-run the best configs of an Optuna search"
        )
    for key, low in (("confirm_top", 0), ("confirm_seeds", 1)):
        value = given.get(key, low)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UsageError(f"--set {key}={_text(value)}: must be an integer >= {low}")
    if "confirm_seeds" in given and not given.get("confirm_top"):
        raise UsageError(
            f"--set confirm_seeds={given['confirm_seeds']}: takes effect only with --set confirm_top=K (K >= 1 "
            f"configs to re-run)"
        )


def check_mixers(spec: StudySpec, profile, overrides: dict):
    """A mixer a study file registered must pass the contract the built-in ones pass, before any trial runs."""
    from trainables.model.mixers import MixerContractError, check_mixer, registered_mixers

    names = {spec.base_keys(profile).get("mixer"), overrides.get("mixer")}
    for values in (spec.axes_for(profile).get("mixer"), overrides.get("mixer")):
        names |= set(values) if isinstance(values, list) else set()
    for name in sorted(n for n in names if isinstance(n, str) and n in registered_mixers()):
        try:
            check_mixer(name)
        except MixerContractError as e:
            raise UsageError(str(e)) from None


def print_plan(plan: Plan):
    """--dry-run: the trial table (grid) or the space (Optuna), then the note beside this run."""
    spec, workers = plan.spec, plan.workers
    if spec.searcher == "grid" and plan.sequential:
        print_rounds(plan)
        if plan.seed_plan:
            print(f"\n{plan.seed_plan.line}")
    elif spec.searcher == "grid":
        print_dry_run(spec, plan.trials)
        if plan.seed_plan:
            print(f"\n{plan.seed_plan.line}")
    else:
        objective = plan.overrides.get("objective", plan.base.get("objective"))
        print(
            f"{spec.name}: {plan.num_samples} trials drawn by Optuna "
            f"({'NSGA-II, val_bpb vs params' if objective == 'multi' else 'TPE'}) with {spec.scheduler} early "
            f"stopping, from:"
        )
        for k, v in plan.axes.items():
            print(f"  {k}: {_describe_domain(v)}")
        planned = [
            (f"a drawn trial ({i})", d["config"], d["train"], _planned_tokens(d["train"], d["gpt"], workers))
            for i, d in enumerate(plan.trials)
        ]
        check_epochs(planned)
        _, config, _, tokens = max(planned, key=lambda p: p[3])
        print(
            f"tokens per trial: up to {tokens:,}, {_epochs_text(_epochs(config, tokens))} epochs; train tokens of "
            f"the corpus: {_corpora_text([d['config'] for d in plan.trials])}"
        )
        if plan.options.seeds > 1:
            print(f"each trial: its config trained with seeds 0..{plan.options.seeds - 1}, their mean reported")
        top, seeds = plan.confirm
        if top:
            first = plan.options.seeds
            print(
                f"then: the {top} best configs by mean {spec.metric} re-run with new seeds {first}..{first + seeds - 1} "
                f"(confirmation)"
            )
    print_mixer_flops(plan)
    print_note_vs_run(plan.fidelity)


def print_rounds(plan: Plan):
    """--seeds auto: the first round's trials, then the rule that adds the others."""
    from reports.sequential import MIN_SEEDS, look_alpha
    from study.sequential import surely_run

    seeds, o = plan.axes["seed"], plan.options
    first = surely_run(plan)
    arms = len(plan.trials) // len(seeds)
    print_dry_run(plan.spec, first)
    print(
        f"\n--seeds auto: round 1 runs these {len(first)} trials (seeds {', '.join(map(str, seeds[:MIN_SEEDS]))} of "
        f"each of the {arms} configs); each later round runs the next seed of every arm still undecided, and of "
        f"the baseline, up to {len(seeds)} seeds ({len(plan.trials)} trials at most). An arm is decided when its "
        f"paired interval at alpha {look_alpha(o.alpha, len(seeds)):.3g} ({o.alpha:g} split over {len(seeds) - 1} "
        f"looks) excludes 0, or lies inside +/-{o.mde:g} {plan.spec.metric}."
    )


def print_mixer_flops(plan: Plan):
    """A registered mixer without its own flops_per_token is counted as 6 x its parameters: the FLOPs say so."""
    from trainables.model.mixers import declares_flops, registered_mixers

    used = sorted({t["gpt"].mixer for t in plan.trials} & set(registered_mixers()))
    for name in used:
        if not declares_flops(name):
            print(
                f"\nFLOPs: mixer {name!r} gives no flops_per_token, so its FLOPs count only 6 x its parameters "
                f"(a matmul's share); give the class a flops_per_token(cfg) for its mixing work"
            )


# What a study's trials are made of: resuming with other values would silently train the old plan (Tune restores
# its pickled trials) or mix two plans in one Optuna study. --num-samples may differ (it extends a search), and a
# grid study's --seeds may grow (the new seeds run as a Tune experiment of their own).
# The resources too: other workers per trial rerun trials from step 0 (a direct trial's checkpoint is Tune's,
# a DDP trial's is Train's) or fail on a world-size mismatch.
RESUME_FIXED = ("profile", "seeds", "max_seeds", "workers_per_trial", "ray_train", "cpus_per_worker")


def _seeds_value(seeds):
    return int(seeds) if isinstance(seeds, str) and seeds.isdigit() else seeds


def check_resume_matches(study, plan: Plan) -> list[dict]:
    """--resume must name the same profile, --set values, resources and registered plan as the run it continues
    (study.json). Only a grid study's --seeds may grow (its new seeds run as trials of their own): the deviation
    from the plan that this returns, for study.json to record."""
    try:
        meta = json.loads((study.local / "study.json").read_text())
        started = meta["args"]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # a run from before study.json kept its args: nothing to compare against
    profile = get_profile(started.get("profile"))

    def effective(d: dict) -> dict:  # an option left out means its default
        return dict(
            profile=d.get("profile"),
            seeds=_seeds_value(d.get("seeds", 1)),
            max_seeds=d.get("max_seeds"),
            workers_per_trial=d.get("workers_per_trial") or profile.workers_per_trial,
            ray_train=bool(d.get("ray_train")),
            cpus_per_worker=float(d.get("cpus_per_worker") or 1.0),
        )

    then = effective(started)
    recorded = started.get("set") or {}
    then["set"] = check_overrides(plan.spec, profile, parse_set(recorded) if isinstance(recorded, list) else recorded)
    now = {**effective(asdict(plan.options)), "set": plan.overrides}
    counts = isinstance(now["seeds"], int) and isinstance(then["seeds"], int)  # "auto" neither grows nor shrinks
    more_seeds = plan.spec.searcher == "grid" and counts and now["seeds"] > then["seeds"]
    diff = [k for k in then if then[k] != now[k] and not (k == "seeds" and more_seeds)]
    if diff:

        def option(k, d):
            if k == "set":
                return " ".join(f"--set {k}={v}" for k, v in sorted(d["set"].items())) or "no --set"
            if k == "ray_train":
                return "--ray-train" if d[k] else "no --ray-train"
            if d[k] is None:
                return f"no --{k.replace('_', '-')}"
            return f"--{k.replace('_', '-')} {d[k]:g}" if isinstance(d[k], float) else f"--{k.replace('_', '-')} {d[k]}"

        def show(d):
            return " ".join(option(k, d) for k in diff)

        raise UsageError(
            f"--resume: {study.shown} was started with {show(then)}, not {show(now)}; resume with the "
            f"options it was started with, or start a new study with another --output"
        )
    registered = meta.get("plan")
    if isinstance(registered, dict):  # a study started before plans were registered has none to keep
        from study.registration import describe, plan_changes, plan_fields

        changes = plan_changes(registered, plan_fields(plan))
        if changes:
            raise UsageError(
                f"--resume: {study.shown} registered its plan before its first trial (sha256 "
                f"{str(registered.get('sha256'))[:12]}) with {', '.join(describe(k, a) for k, a, _ in changes)}, "
                f"not {', '.join(describe(k, b) for k, _, b in changes)}; resume with that plan, or start a new "
                f"study with another --output"
            )
    if not more_seeds:
        return []
    from study.registration import seeds_deviation

    added = sum(t["searched"].get("seed", 0) >= then["seeds"] for t in plan.trials)
    return [seeds_deviation(then["seeds"], now["seeds"], added)]


def main(argv=None):
    mark("cli_start")
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    spec_for_help = STUDIES.get(first) if first else None
    args = build_parser(spec_for_help).parse_args(argv)
    if args.list:
        for name, spec in STUDIES.items():
            print(f"{name:16} {spec.hypothesis}")
        return 0
    try:
        if not args.study:
            raise UsageError("no study given: python -m study.run STUDY (see --list), or a study file NAME.toml")
        options = RunOptions(**{k: v for k, v in vars(args).items() if k not in ("study", "list")})
        options.set = parse_set(args.set)
        return run_plan_status(find_study(args.study, options.output), options)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the Tuner runs (it handles Ctrl-C itself): nothing to continue yet
        print("interrupted", file=sys.stderr)
        return 130


def find_study(study: "str | os.PathLike | StudySpec", output: str = "results") -> StudySpec:
    """A study by name, a study file (.toml, .py), or a StudySpec; a name that is neither built in nor loaded yet is
    looked up in its results folder, whose study.json keeps a copy of the study file it was started from."""
    from study.files import load_study_file, study_from_results

    if isinstance(study, StudySpec):
        return study
    text = os.fspath(study)
    if text.endswith((".toml", ".py")):
        return load_study_file(text)
    if text in STUDIES:
        return STUDIES[text]
    return study_from_results(text, output) or _checked(lambda: get_study(text))


def run_study(study, *, resume: bool = False, **options):
    """Runs a study from Python, as `python -m study.run` does: `study` is a name, a study file's path or a
    StudySpec; the keyword arguments are the command line's options (profile="smoke", seeds=2, set={...},
    output="results", ...). A bad input raises UsageError (a ValueError) with the CLI's one-line message.
    Returns the finished study's StudyResult (load_study); with dry_run=True, prints the plan and returns it."""
    from trainables.storage import join

    unknown = sorted(set(options) - {f for f in RunOptions.__dataclass_fields__})
    if unknown:
        raise UsageError(
            f"run_study: unknown option {unknown[0]!r}; options: {', '.join(RunOptions.__dataclass_fields__)}"
        )
    options = RunOptions(resume=resume, **options)
    options.set = dict(options.set or {})
    spec = find_study(study, options.output)
    if options.dry_run:
        plan = make_plan(spec, options)
        print_plan(plan)
        return plan
    from study.api import load_study

    plan, status = run_plan(spec, options)
    if status == 1:
        raise RuntimeError(f"{spec.name}: the study failed; see {join(plan.options.output, spec.name, 'driver.log')}")
    return load_study(join(plan.options.output, spec.name))


def run_plan_status(spec: StudySpec, options: RunOptions) -> int:
    if options.dry_run:
        print_plan(make_plan(spec, options))
        return 0
    return run_plan(spec, options)[1]


def run_plan(spec: StudySpec, options: RunOptions) -> tuple[Plan, int]:
    """Plans the study, takes its folder's lock, prepares its data and runs it: (plan, exit status)."""
    plan = make_plan(spec, options)
    options = plan.options
    print_mixer_flops(plan)
    check_address(options.address)
    check_storage_reachable(options.storage)
    if options.address in (None, "local"):
        check_local_resources(plan.profile, plan.workers, plan.gpus, options.cpus_per_worker)
    check_output_reachable(options.output)
    from study.lock import StudyLock, StudyLocked
    from study.results import StudyStorage
    from trainables.storage import is_uri, join

    location = join(options.output, spec.name)
    made = [] if is_uri(location) else _make_folder(location)  # the lock file lives in the study's folder
    lock = StudyLock(location)
    try:
        lock.acquire()
    except StudyLocked as e:
        _remove_empty(made)
        raise UsageError(
            f"{location} is being run by another driver ({e}); wait for it to end, or stop it "
            f"(a driver that died leaves a lock that --resume takes over)"
        ) from None
    study = None
    try:
        study = StudyStorage.open(options.output, spec.name)  # with a URI: a staged copy of what is there
        existing = any(study.local.glob("tune*/tuner.pkl"))
        if existing and not options.resume:
            raise UsageError(
                f"{study.shown} already holds a run of {spec.name}: add --resume to continue it, or "
                f"choose another --output"
            )
        if options.resume and not existing:
            raise UsageError(f"--resume: {study.shown} holds no run of {spec.name} to resume")
        if existing:
            plan.deviations = check_resume_matches(study, plan)
        if plan.seed_plan:  # --mde on a run: the planner's answer before the trials (it changes nothing in them)
            print(plan.seed_plan.line, flush=True)
        with span("prepare_data"):
            prepare_data([t["config"] for t in plan.trials])
        with span("import_service"):
            from study.service import execute  # Ray and friends load only now, after every check passed
    except BaseException:
        if study:
            study.discard()
        lock.release()
        _remove_empty(made)
        raise
    try:
        return plan, execute(plan, study, resuming=existing)
    finally:
        lock.release()


def _make_folder(path: str) -> list[str]:
    """Creates path and its missing parents; returns those it created, deepest first."""
    made, p = [], os.path.abspath(path)
    while not os.path.exists(p):
        made.append(p)
        p = os.path.dirname(p)
    os.makedirs(path, exist_ok=True)
    return made


def _remove_empty(folders: list[str]):
    """Undoes _make_folder where nothing was written: a refused run leaves no trace."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            return


if __name__ == "__main__":
    status = main()
    mark("cli_end")
    # Every file is written and closed, Ray is shut down and the lock released: the interpreter's own teardown
    # of torch's and Ray's modules would add about a second to every command.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
