"""python -m study.run STUDY [options]: run a named study on this machine or on a Ray cluster.

Everything a user can get wrong (study, profile, --set keys and values, storage URL, address, data) is
checked before Ray starts: a bad input exits 2 with one line on stderr and leaves results/ untouched.
"""
import argparse
import json
import math
import os
import signal
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from study.catalog import STUDIES, StudySpec, get_profile, get_study, grid_configs
from study.profiles import DEFAULT_PROFILE, PROFILES


class UsageError(ValueError):
    """A mistake in what the user typed: reported in one line, exit status 2."""


# ----------------------------------------------------------------------------- command line

def build_parser(spec: StudySpec | None = None) -> argparse.ArgumentParser:
    description = "Run a named architecture study: every trial a Ray Tune trial running Ray Train DDP."
    epilog = "studies: " + ", ".join(STUDIES) + "\nprofiles: " + ", ".join(PROFILES)
    if spec:
        profile = PROFILES[DEFAULT_PROFILE]
        axes = spec.axes(profile)
        description = (f"{spec.name}: {spec.hypothesis}\n\nseed note: {spec.seed_note}\nsearcher: {spec.searcher}, "
                       f"scheduler: {spec.scheduler}, metric: {spec.metric} ({spec.mode})\naxes: "
                       + ", ".join(f"{k}={v if isinstance(v, list) else type(v).__name__}" for k, v in axes.items()))
    ap = argparse.ArgumentParser(prog="python -m study.run", description=description, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", nargs="?", help="study name (see --list)")
    ap.add_argument("--list", action="store_true", help="list the studies and exit")
    ap.add_argument("--profile", default=DEFAULT_PROFILE, help=f"budget: {', '.join(PROFILES)} (default {DEFAULT_PROFILE})")
    ap.add_argument("--dry-run", action="store_true", help="print each trial's config, parameters, tokens and FLOPs; no Ray")
    ap.add_argument("--seeds", type=int, default=1, help="run each config N times with seeds 0..N-1 (grid studies)")
    ap.add_argument("--num-samples", type=int, default=None, help="trials an Optuna search runs (default: per profile)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key (a,b,c makes it an axis); repeatable")
    ap.add_argument("--output", default="results",
                    help="results root: a folder (default results/) or a storage URI (s3://BUCKET/PATH, gs://...)")
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted study; a finished Optuna search runs --num-samples more trials")
    ap.add_argument("--address", default=None, help="an existing Ray cluster (host:port, ray://..., or auto)")
    ap.add_argument("--workers-per-trial", type=int, default=None, help="Ray Train workers (DDP ranks) per trial")
    ap.add_argument("--gpus-per-trial", type=int, default=None, help="GPUs per trial (one per worker)")
    ap.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per training worker (default 1)")
    ap.add_argument("--ray-train", action="store_true",
                    help="run a Ray Train TorchTrainer even for one worker per trial (default: only for 2+ workers)")
    ap.add_argument("--wandb", default="offline", choices=["offline", "online", "disabled"],
                    help="tracking: offline runs in the study dir (default), online needs WANDB_API_KEY")
    ap.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite in the study dir)")
    ap.add_argument("--no-report", action="store_true", help="skip building the report at the end")
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


def parse_overrides(items: list[str], spec: StudySpec, profile) -> dict:
    allowed = spec.settable_keys(profile)
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r}: must be KEY=VALUE")
        if key not in allowed:
            raise UsageError(f"--set {key}: unknown key for {spec.name}; allowed: {', '.join(sorted(allowed))}")
        out[key] = parse_value(value)
        _check_type(key, out[key])
    return out


def _check_type(key: str, value):
    """A --set value must have its field's type (lr=abc would otherwise fail deep inside a comparison)."""
    import types
    from dataclasses import fields
    from trainables.model import GPTConfig
    from trainables.train import TrainConfig
    declared = {f.name: f.type for f in fields(GPTConfig) + fields(TrainConfig)}.get(key)
    if declared is None:
        return  # a study's own key: its resolve() checks it
    declared = set(declared.__args__) if isinstance(declared, types.UnionType) else {declared}
    words = {int: "an integer", float: "a number", bool: "true or false", str: "text", type(None): "none"}
    allowed = declared | ({int} if float in declared else set())
    for v in value if isinstance(value, list) else [value]:
        if type(v) not in allowed:
            raise UsageError(f"--set {key}={v!r}: must be {' or '.join(words[t] for t in words if t in declared)}")


# ----------------------------------------------------------------------------- planning (no Ray)

def plan_trials(spec: StudySpec, profile, overrides: dict, seeds: int, workers: int) -> list[dict]:
    """Grid studies: every trial's resolved config, validated (GPTConfig/TrainConfig/solver) and named."""
    from search_spaces.common import tokenizer_vocab_size
    from trainables.train import resolve_configs

    trials, names = [], set()
    for searched in grid_configs(spec, profile, overrides, seeds):
        config = _checked(lambda: spec.resolve(searched))
        gpt, tc = _checked(lambda: resolve_configs(config, tokenizer_vocab_size(config["tokenizer"])))
        name = spec.trial_name(config)
        if name in names:
            raise UsageError(f"two trials would both be named {name!r}: vary an axis or use --seeds")
        names.add(name)
        trials.append(dict(name=name, searched=searched, config=config, gpt=gpt, train=tc,
                           tokens=_planned_tokens(tc, gpt, workers)))
    return trials


def validate_search(spec: StudySpec, profile, overrides: dict, n: int = 16):
    """Optuna studies: draw configs from the space and check they all build (fixed RNG: reproducible)."""
    import random
    from search_spaces.common import tokenizer_vocab_size
    from trainables.train import resolve_configs
    from ray import tune  # noqa: F401  (the space is made of Tune domains; importing tune starts nothing)

    space = spec.axes(profile)
    base = {**spec.base(profile), **overrides}
    rng = random.Random(0)
    for _ in range(n):
        drawn = {k: (v.sample(random_state=rng.randint(0, 2**31)) if hasattr(v, "sample") else v)
                 for k, v in space.items() if k not in overrides}
        config = _checked(lambda: spec.resolve({**base, **drawn}))
        _checked(lambda: resolve_configs(config, tokenizer_vocab_size(config["tokenizer"])))


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


def _planned_tokens(tc, gpt, workers: int) -> int:
    per_step = tc.total_batch_tokens or tc.batch_size * gpt.seq_len * workers
    steps = math.ceil(tc.max_tokens / per_step) if tc.max_tokens else tc.max_steps
    return steps * per_step


def print_dry_run(spec: StudySpec, trials: list[dict]):
    from trainables.model import count_params, flops_per_token, nanohead_split
    header = f"{'trial':34} {'variant':14} {'L':>3} {'width':>5} {'heads':>5} {'nano':>6} {'vocab':>6} {'params':>11} {'embed':>10} {'lm_head':>10} {'blocks':>11} {'tokens':>11} {'FLOPs':>9}"
    print(f"{spec.name}: {len(trials)} trials\n{header}\n{'-' * len(header)}")
    for t in trials:
        g = t["gpt"]
        p = count_params(g)
        flops = flops_per_token(g) * t["tokens"]
        split = nanohead_split(g) if g.mixer == "attention" else None
        nano = f"{split.n_nano}x{split.nano_dim}" if split and split.n_nano else "-"  # nano heads x their dim
        print(f"{t['name']:34} {spec.variant({**t['config'], **g.to_dict()}):14} {g.n_layer:>3} {g.n_embd:>5} {g.n_head:>5} {nano:>6} "
              f"{g.vocab_size:>6} {p['total']:>11,} {p['embedding']:>10,} {p['lm_head']:>10,} {p['blocks']:>11,} "
              f"{t['tokens']:>11,} {flops:>9.2e}")
    axes = sorted({k for t in trials for k in t["searched"] if len({str(u['searched'].get(k)) for u in trials}) > 1})
    if axes:
        print("\naxes: " + "; ".join(f"{k} = {sorted({str(t['searched'][k]) for t in trials})}" for k in axes))


# ----------------------------------------------------------------------------- checks of the environment

def check_storage(url: str | None):
    if url is None:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(f"--storage {url!r}: not a database URL; use e.g. sqlite:///optuna.db or "
                         f"postgresql://user@host/db") from None
    try:
        parsed.get_dialect()  # the dialect only, not its driver (a --dry-run may check a URL meant for a cluster)
    except ArgumentError:  # NoSuchModuleError: no such dialect
        raise UsageError(f"--storage {parsed.render_as_string(hide_password=True)}: unknown database kind "
                         f"{parsed.drivername!r}; use sqlite:///PATH, postgresql://..., mysql://... (any SQLAlchemy URL)") from None


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
        engine = create_engine(parsed, **({"connect_args": {"connect_timeout": 5}} if backend in ("postgresql", "mysql") else {}))
    except ImportError as e:
        raise UsageError(f"--storage {shown}: the {parsed.drivername} driver is not installed ({e}); install it or "
                         f"use sqlite:///PATH") from None
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


OUTPUT_URI_HELP = "a folder, or a storage URI such as s3://BUCKET/PATH, gs://BUCKET/PATH, abfs://CONTAINER/PATH"


def check_output(output: str) -> str:
    """--output: a folder, or a URI pyarrow can open (no network yet: a --dry-run checks it offline).
    file:// URIs become plain paths. Returns the output to use."""
    from trainables.storage import is_uri, open_location
    if output.startswith("file://"):
        return output[len("file://"):]
    if not is_uri(output):
        return output
    from urllib.parse import parse_qs, urlsplit
    parts = urlsplit(output)
    if parts.password or {"secret_key", "session_token", "access_key"} & set(parse_qs(parts.query)):
        raise UsageError(f"--output {parts.scheme}://{parts.hostname or ''}...: credentials in the URI would be "
                         f"written into study.json and the logs; put them in the environment (AWS_ACCESS_KEY_ID, ...)")
    try:
        open_location(output)
    except (ValueError, OSError) as e:
        raise UsageError(f"--output {output}: {str(e).splitlines()[0]}; give {OUTPUT_URI_HELP}") from None
    return output


def check_output_reachable(output: str):
    """Before a run: a URI's bucket (or container) must exist and these credentials must reach it."""
    from trainables.storage import is_uri, open_location
    if not is_uri(output):
        return
    import pyarrow.fs as pafs
    fs, path = open_location(output)
    bucket = path.split("/")[0]
    try:
        info = fs.get_file_info(bucket)
    except OSError as e:
        raise UsageError(f"--output {output}: cannot reach the storage ({str(e).splitlines()[0][:300]}); check the "
                         f"credentials and endpoint in the environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, ...)") from None
    if info.type == pafs.FileType.NotFound:
        raise UsageError(f"--output {output}: the bucket {bucket!r} does not exist (or these credentials cannot see "
                         f"it); create it first")


def check_address(address: str | None):
    """Fails fast (exit 2) on an address nothing listens on, before any Ray call could hang on it."""
    if address in (None, "auto", "local"):
        if address == "auto" and not os.environ.get("RAY_ADDRESS") and not _local_cluster_running():  # Ray Jobs set RAY_ADDRESS
            raise UsageError("--address auto: no Ray cluster is running on this machine; start one with "
                             "`ray start --head` or omit --address to start a local one")
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
            raise UsageError(f"{gpus} GPU per trial (--gpus-per-trial, or the {profile.name} profile's default) for "
                             f"{workers} worker(s): this machine has {have} GPU(s); use --gpus-per-trial 0, a smaller "
                             f"--workers-per-trial, or --address a cluster with GPUs")
    have = os.cpu_count() or 1
    if workers * cpus_per_worker > have:
        raise UsageError(f"--workers-per-trial {workers} x --cpus-per-worker {cpus_per_worker:g} needs "
                         f"{workers * cpus_per_worker:g} CPUs per trial: this machine has {have}; ask for fewer or "
                         f"--address a larger cluster")


def _local_cluster_running() -> bool:
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


def prepare_data(configs: list[dict]):
    """Tokenizers and token shards, once per (corpus, tokenizer), before any trial starts."""
    from trainables.data import prepare_tokens
    seen = set()
    for c in configs:
        key = (c.get("corpus", "wiki"), c["tokenizer"])
        if key not in seen:
            seen.add(key)
            t0 = time.time()
            data = _checked(lambda: prepare_tokens(*key))
            print(f"data: {key[0]} / {key[1]}: {data.n_train_tokens:,} train + {data.n_val_tokens:,} val tokens "
                  f"({time.time() - t0:.1f}s)", flush=True)


# ----------------------------------------------------------------------------- the run

# What a study's trials are made of: resuming with other values would silently train the old plan (Tune restores
# its pickled trials) or mix two plans in one Optuna study. --num-samples may differ (it extends a search).
RESUME_FIXED = ("profile", "seeds")


def check_resume_matches(study, args, overrides: dict):
    """--resume must name the same profile, --set values and --seeds as the run it continues (study.json)."""
    try:
        started = json.loads((study.local / "study.json").read_text())["args"]
    except (OSError, ValueError, KeyError):
        return  # a run from before study.json kept its args: nothing to compare against
    then = {k: started.get(k) for k in RESUME_FIXED}
    then["set"] = parse_overrides(started.get("set") or [], get_study(started.get("study") or args.study),
                                  get_profile(then["profile"]))
    now = {**{k: getattr(args, k) for k in RESUME_FIXED}, "set": overrides}
    diff = [k for k in then if then[k] != now[k]]
    if diff:
        def show(d):
            sets = " ".join(f"--set {k}={v}" for k, v in sorted(d["set"].items())) or "no --set"
            return " ".join(sets if k == "set" else f"--{k} {d[k]}" for k in diff)
        raise UsageError(f"--resume: {study.shown} was started with {show(then)}, not {show(now)}; resume with the "
                         f"options it was started with, or start a new study with another --output")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    spec_for_help = STUDIES.get(first) if first else None
    args = build_parser(spec_for_help).parse_args(argv)
    if args.list:
        for name, spec in STUDIES.items():
            print(f"{name:16} {spec.hypothesis}")
        return 0
    try:
        return run(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    if not args.study:
        raise UsageError("no study given: python -m study.run STUDY (see --list)")
    spec = _checked(lambda: get_study(args.study))
    profile = _checked(lambda: get_profile(args.profile))
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: must be >= 1")
    if args.num_samples is not None and args.num_samples < 1:
        raise UsageError(f"--num-samples {args.num_samples}: must be >= 1")
    if args.seeds > 1 and spec.searcher == "optuna":
        raise UsageError(f"--seeds: {spec.name} is an Optuna search (each trial is a new config); seeds apply to grid studies")
    if args.storage and spec.searcher != "optuna":
        raise UsageError(f"--storage: {spec.name} uses no Optuna storage; it applies to {', '.join(s for s in STUDIES if STUDIES[s].searcher == 'optuna')}")
    workers = profile.workers_per_trial if args.workers_per_trial is None else args.workers_per_trial
    gpus = profile.gpus_per_trial if args.gpus_per_trial is None else args.gpus_per_trial
    if workers < 1:
        raise UsageError(f"--workers-per-trial {workers}: must be >= 1")
    if gpus < 0:
        raise UsageError(f"--gpus-per-trial {gpus}: must be >= 0")
    if not args.cpus_per_worker > 0:
        raise UsageError(f"--cpus-per-worker {args.cpus_per_worker}: must be > 0")
    overrides = parse_overrides(args.set, spec, profile)
    if spec.study_keys and "objective" in overrides and overrides["objective"] not in ("single", "multi"):
        raise UsageError(f"--set objective={overrides['objective']!r}: must be single or multi")
    check_storage(args.storage)
    args.output = check_output(args.output)

    if spec.searcher == "grid":
        trials = plan_trials(spec, profile, overrides, args.seeds, workers)
        if args.dry_run:
            print_dry_run(spec, trials)
            return 0
        data_configs = [t["config"] for t in trials]
    else:
        validate_search(spec, profile, overrides)
        if args.dry_run:
            n = args.num_samples or spec.num_samples[profile.name]
            print(f"{spec.name}: {n} trials drawn by Optuna ({'NSGA-II, val_bpb vs params' if overrides.get('objective') == 'multi' else 'TPE'}) "
                  f"with {spec.scheduler} early stopping, from:")
            for k, v in spec.axes(profile).items():
                print(f"  {k}: {_describe_domain(v)}")
            return 0
        data_configs = [spec.resolve({**spec.base(profile), **overrides, **{k: v.sample() for k, v in spec.axes(profile).items() if k not in overrides}})]

    check_address(args.address)
    check_storage_reachable(args.storage)
    if args.address in (None, "local"):
        check_local_resources(profile, workers, gpus, args.cpus_per_worker)
    check_output_reachable(args.output)
    from study.results import StudyStorage
    study = StudyStorage.open(args.output, spec.name)  # with a URI: a staged copy of what is there
    try:
        existing = study.local.exists() and any(study.local.glob("tune*/tuner.pkl"))
        if existing and not args.resume:
            raise UsageError(f"{study.shown} already holds a run of {spec.name}: add --resume to continue it, or "
                             f"choose another --output")
        if args.resume and not existing:
            raise UsageError(f"--resume: {study.shown} holds no run of {spec.name} to resume")
        if existing:
            check_resume_matches(study, args, overrides)
        prepare_data(data_configs)
    except UsageError:
        study.discard()
        raise

    from study.service import execute  # Ray and friends load only now, after every check passed
    return execute(spec, profile, args, overrides, study, workers, gpus, resuming=existing)


if __name__ == "__main__":
    sys.exit(main())
