"""Runs a validated study on Ray: cluster, Tuner (grid or Optuna, FIFO or ASHA), progress, results, report.

Only study.run calls this, after every user input has been checked.
"""

import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

import ray
from ray import tune
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune.search import ConcurrencyLimiter

from study.audit import AuditedASHA, audited
from study.files import STUDY_MODULE_PREFIX
from study.results import StudyStorage, collect, confirm_dirs, experiment_dirs, write_trials, write_view_outputs
from study.run import redacted_argv
from trainables.storage import join, write_atomic
from trainables.timeline import TIMELINE_ENV, mark, span
from trainables.tune import TRAIN_ENV, TrialResources, environment, make_trainable, tune_run_settings


def start_ray(address: str | None, resources: TrialResources, stops_early: bool) -> tuple[int, TrialResources]:
    """Connects to a cluster or starts a local one; returns how many trials may run at once, and the
    resources (without the train_driver resource on a cluster that declares none). stops_early: the study's
    scheduler stops trials before their end (ASHA), which needs the dashboard (see below)."""
    if address:
        ray.init(address=address, log_to_driver=False)
        cluster = ray.cluster_resources()
        concurrent = resources.max_concurrent(cluster)
        if cluster.get("train_driver", 0) < 1:
            say(
                "note: the cluster declares no train_driver resource; capping trials with max_concurrent_trials "
                f"= {concurrent} (see trainables/tune.py)"
            )
            resources = replace(resources, driver_resource=False)
        return concurrent, resources
    from study.run import local_cluster_running

    if local_cluster_running():
        say(
            "note: a Ray cluster started with `ray start` is running on this machine; this study runs on a Ray of "
            "its own (--address auto joins that one)"
        )
    cpus = os.cpu_count() or 1
    concurrent = resources.max_concurrent({"CPU": cpus, "GPU": _local_gpus()})
    # address="local": always a Ray of our own, never the cluster a `ray start` (or a crashed run) left behind.
    # The dashboard frees the placement groups of trials that ASHA stops early (ray#54305); a study whose trials
    # all run to their end starts without it, 1-1.5 s sooner (benchmarks/bench_service.py). It binds to
    # 127.0.0.1 only.
    mark("ray_init_start")
    ray.init(
        address="local",
        num_cpus=cpus,
        num_gpus=_local_gpus(),
        resources={"train_driver": concurrent},
        include_dashboard=stops_early,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
        configure_logging=True,
        logging_level="ERROR",
        runtime_env={
            "env_vars": {
                **TRAIN_ENV,
                **{k: os.environ[k] for k in ("NANOSTUDIES_CACHE", TIMELINE_ENV, *TRAIN_ENV) if k in os.environ},
            }
        },
    )
    mark("ray_init_end")
    return concurrent, resources


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


class Progress(tune.Callback):
    """One line per event a person cares about: counts, best so far, elapsed and ETA."""

    def __init__(self, total: int, metric: str, concurrent: int, name_of):
        self.total, self.metric, self.concurrent, self.name_of = total, metric, concurrent, name_of
        self.t0 = time.time()
        self.best = (math.inf, None)
        self.durations = []
        self.started = {}

    def _line(self, trials, event: str, ending=None, failed: bool = False):
        # Tune updates a finishing trial's status after the callback: count it by hand.
        status = lambda t: ("ERROR" if failed else "TERMINATED") if t is ending else t.status
        counts = {s: sum(status(t) == s for t in trials) for s in ("PENDING", "RUNNING", "TERMINATED", "ERROR")}
        done = counts["TERMINATED"] + counts["ERROR"]
        elapsed = time.time() - self.t0
        eta = ""
        if self.durations and done < self.total:
            remaining = self.total - done
            eta = f" | ETA {_fmt(sum(self.durations) / len(self.durations) * remaining / max(1, self.concurrent))}"
        best = f" | best {self.metric} {self.best[0]:.4f} ({self.best[1]})" if self.best[1] else ""
        say(
            f"[{datetime.now():%H:%M:%S}] {event:42.42} | {done}/{self.total} done ({counts['ERROR']} failed), "
            f"{counts['RUNNING']} running, {max(0, self.total - done - counts['RUNNING'])} pending{best} | "
            f"elapsed {_fmt(elapsed)}{eta}"
        )

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.time()
        mark("trial_start", trial=str(trial))
        self._line(trials, f"start {trial}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and value < self.best[0]:
            self.best = (value, str(trial))
        if "step" in result:
            self._line(
                trials,
                f"{trial} step {result['step']} {self.metric} {value:.4f}" if isinstance(value, float) else str(trial),
            )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.durations.append(time.time() - self.started.get(trial.trial_id, self.t0))
        mark("trial_end", trial=str(trial))
        self._line(trials, f"done {trial}", ending=trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.durations.append(time.time() - self.started.get(trial.trial_id, self.t0))
        self._line(trials, f"FAILED {trial}", ending=trial, failed=True)


class PushStudyFiles(tune.Callback):
    """With a cloud URI: the driver's own files (study.json, optuna.db, wandb runs) go up whenever a trial starts
    or ends, so a driver that dies loses at most the trials then running (Tune restores those from its state).
    It pushes the study this driver runs (`_ACTIVE`), never a staging folder named in a restored Tuner's pickle."""

    def on_trial_start(self, iteration, trials, trial, **info):
        self.push()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.push()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.push()

    @staticmethod
    def push():
        # An exception here would reach Tune's event loop and stop the study; the next event (and the
        # final push, which does fail loudly) sends whatever this one could not.
        try:
            _ACTIVE.files.push()
        except OSError as e:
            say(
                f"warning: could not push the study's files to {_ACTIVE.uri} ({str(e).strip().splitlines()[0]}); "
                f"trying again at the next trial event",
                err=True,
            )


class StudyWandb(WandbLoggerCallback):
    """Ray's wandb callback, writing its runs into the study this driver runs (a restored Tuner's pickled
    callback would name the staging folder of the run that started it)."""

    def setup(self, *args, **kwargs):
        (_ACTIVE.local / "wandb").mkdir(parents=True, exist_ok=True)
        self.kwargs["dir"] = str(_ACTIVE.local)
        os.environ["WANDB_MODE"] = self.kwargs["mode"]  # offline needs no API key; a restored Tuner sets it here
        os.environ.setdefault("WANDB_SILENT", "true")
        super().setup(*args, **kwargs)


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def build_tuner(plan, study: StudyStorage, resources, concurrent: int, exp_name: str):
    spec, options = plan.spec, plan.options
    metric, mode = spec.metric, spec.mode
    study_dir = study.local
    trainable = trial_trainable(plan, study, resources)
    base = plan.base
    searcher, scheduler = None, None
    tune_metric, tune_mode = metric, mode
    if spec.searcher == "grid":
        if math.prod(len(v) for v in plan.axes.values()) == len(plan.trials):
            space = {**base, **{k: tune.grid_search(list(v)) for k, v in plan.axes.items()}}
        else:  # some arms of a sequential round: no product of axis values, so a grid over the trials themselves
            space = {**base, AXES: tune.grid_search([{k: t["searched"][k] for k in plan.axes} for t in plan.trials])}
        n_trials = len(plan.trials)
        samples = 1
        names = {_config_key(t["searched"]): t["name"] for t in plan.trials}  # the plan named every trial

        def name_of(trial):
            return names[_config_key(flat(trial.config))]
    else:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        space = {**base, **plan.axes}
        samples = plan.num_samples
        storage_url = options.storage or f"sqlite:///{(study_dir / 'optuna.db').resolve()}"
        storage = optuna.storages.RDBStorage(storage_url)
        # An extension seeds its sampler with the trials already in the study: a fresh sampler with the first
        # run's seed would draw the first run's configs again (TPE's startup trials are random draws).
        seed = len(_optuna_trials(optuna, storage, spec.name))
        if base.get("objective") == "multi":
            optuna_search = OptunaSearch(
                metric=[metric, "params_total"],
                mode=[mode, "min"],
                storage=storage,
                study_name=spec.name,
                sampler=optuna.samplers.NSGAIISampler(seed=seed),
            )
            tune_metric, tune_mode = None, None
        else:
            optuna_search = OptunaSearch(
                metric=metric,
                mode=mode,
                storage=storage,
                study_name=spec.name,
                sampler=optuna.samplers.TPESampler(seed=seed),
            )
        searcher = ConcurrencyLimiter(optuna_search, max_concurrent=concurrent)
        n_trials = samples

        def name_of(trial):
            # The Optuna trial number: unique in the study's storage, and it goes on across extensions (tune_2).
            # Tune names a trial right after the searcher's suggest() asked Optuna for it (a restored trial keeps
            # its name); Tune's own trial ids carry no index under a searcher.
            ot_trial = optuna_search._ot_trials.get(trial.trial_id)
            index = ot_trial.number if ot_trial is not None else len(_optuna_trials(optuna, storage, spec.name)) - 1
            return f"{spec.name}_{index:04d}"

    if spec.scheduler == "asha":
        # Single objective: ASHA takes the metric from TuneConfig. Multi-objective: TuneConfig has none, so
        # ASHA stops on val_bpb alone while NSGA-II samples for the Pareto front.
        asha_metric = {} if tune_metric else dict(metric=metric, mode=mode)
        scheduler = asha_scheduler(plan, **asha_metric)
    callbacks = tune_callbacks(plan, study, n_trials, concurrent, name_of)
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=tune_metric,
            mode=tune_mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=samples,
            max_concurrent_trials=concurrent,
            trial_name_creator=name_of,
            trial_dirname_creator=name_of,
        ),
        run_config=tune.RunConfig(
            name=exp_name, storage_path=study.root, callbacks=callbacks, verbose=0, **tune_run_settings(resources)
        ),
    )
    return tuner, n_trials, callbacks


def asha_scheduler(plan, **metric) -> AuditedASHA:
    """ASHA on evals (training_iteration), max_t the trials' evals (the profile's, or --set max_steps/eval_every),
    grace a quarter of them, reduction factor 3; the plan's audit_fraction of its trials are never stopped
    (study.audit)."""
    steps, every = (plan.base.get(k) or getattr(plan.profile, k) for k in ("max_steps", "eval_every"))
    max_t = max(1, steps // every)
    return AuditedASHA(
        audit_fraction=plan.audit_fraction,
        seed=study_seed(plan),
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=max(1, max_t // 4),
        reduction_factor=3,
        **metric,
    )


def study_seed(plan) -> int:
    """The study's seed (its base `seed`; 0 where seeds are an axis or unset): it seeds the audit's draw."""
    seed = plan.base.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


def asha_record(plan) -> dict:
    """study.json's "asha": the scheduler's settings and rungs, the audit's share and seed, the searched keys; the
    report's pruning audit reads them back."""
    s = asha_scheduler(plan, metric=plan.spec.metric, mode=plan.spec.mode)
    return dict(
        time_attr="training_iteration",
        max_t=s._max_t,
        grace_period=s.milestones()[0],
        reduction_factor=s._reduction_factor,
        milestones=s.milestones(),
        audit_fraction=plan.audit_fraction,
        seed=study_seed(plan),
        keys=[k for k in plan.axes if k != "seed"],
    )


def mark_audited(df, plan):
    """trials.parquet's `audited` column: whether ASHA was barred from stopping the trial (study.audit.audited)."""
    if plan.spec.scheduler == "asha" and len(df):
        df["audited"] = [audited(name, study_seed(plan), plan.audit_fraction) for name in df["trial"]]
    return df


def tune_callbacks(plan, study: StudyStorage, n_trials: int, concurrent: int, name_of) -> list:
    """An experiment's progress lines, its pushes to a storage URI and its wandb runs."""
    callbacks = [Progress(n_trials, plan.spec.metric, concurrent, name_of)]
    if study.uri:
        callbacks.append(PushStudyFiles())
    if plan.options.wandb != "disabled":
        callbacks.append(wandb_callback(plan.spec, plan.options.wandb))
    return callbacks


def _config_key(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def trial_trainable(plan, study: StudyStorage, resources):
    """The Tune trainable of this plan's trials: the study's one resolve (spec.trial_config) runs in each trial, and the mixers a study file registered travel with it (by value: the workers never saw the file)."""
    from ray import cloudpickle

    from trainables.model.mixers import registered_mixers

    mixers = registered_mixers()
    # a .py study's own functions (resolve, variant, ...) and mixers live in a module only the driver has
    modules = {cls.__module__ for cls in mixers.values()}
    modules |= {
        f.__module__
        for f in vars(plan.spec).values()
        if callable(f) and str(f.__module__).startswith(STUDY_MODULE_PREFIX)
    }
    for name in sorted(modules):
        cloudpickle.register_pickle_by_value(sys.modules[name])
    resolve = plan.spec.trial_config
    return make_trainable(study.root, resources, resolve=lambda c: resolve(flat(c)), mixers=mixers)


# A trial's searched values as one key: a grid over whole trials, where they are no product of axis values (a
# sequential round's arms, build_tuner) or are configs of their own (a search's confirmation, confirm_tuner).
AXES = "_axes"


def flat(config: dict) -> dict:
    """A Tune trial's config as the plan searched it: the AXES key's values spread beside the base keys."""
    return {**{k: v for k, v in config.items() if k != AXES}, **config.get(AXES, {})}


def _optuna_trials(optuna, storage, name: str) -> list:
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # no such study yet
        return []


def wandb_callback(spec, mode: str) -> StudyWandb:
    """Ray's wandb integration: offline by default (runs land in the study dir; `wandb sync` later)."""
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        say("note: --wandb online without WANDB_API_KEY: wandb will use its stored login")
    return StudyWandb(
        project=f"nanostudies-{spec.name}",
        group=f"{spec.name}-{datetime.now():%Y%m%d-%H%M%S}",
        mode=mode,
        excludes=["config"],
        log_config=False,
    )


def write_study_json(
    plan, study_dir: Path, started: str, ended: str | None, interrupted: bool, concurrent: int | None = None
):
    """What the report and a --resume read: the study, its plan's options, the note beside this run (fidelity),
    the environment, a study file's own text (study_file), the trials planned (what the live view counts as
    pending, and how many run at once for its ETA), and the plan registered before the first trial with the
    deviations from it (study.registration)."""
    from study.registration import registered_plan
    from study.sequential import surely_run

    spec, options = plan.spec, plan.options
    env = environment()
    meta = dict(
        study=spec.name,
        family=spec.family,
        views=list(spec.views),
        profile=plan.profile.name,
        hypothesis=spec.hypothesis,
        note=spec.note,
        args={**asdict(options), "set": plan.overrides},
        versions=env.pop("versions"),
        git_commit=env.pop("git_commit"),
        started=started,
        ended=ended,
        interrupted=interrupted,
        metric=spec.metric,
        mode=spec.mode,
        threshold=spec.threshold,
        environment=env,
        trials_planned=dict(
            count=len(surely_run(plan)) if spec.searcher == "grid" else plan.num_samples,
            names=[t["name"] for t in surely_run(plan)] if spec.searcher == "grid" else None,  # a search's: drawn later
            at_once=concurrent,
        ),
        **({"baseline": {"variant": spec.baseline_arm}} if spec.baseline_arm else {}),
        **({"fidelity": plan.fidelity} if plan.fidelity else {}),
        **({"asha": asha_record(plan)} if spec.scheduler == "asha" else {}),
        **({"study_file": {"name": spec.source_name, "text": spec.source}} if spec.source else {}),
    )
    if options.storage:  # a database URL may carry a password: keep only its form
        meta["args"]["storage"] = _redact_url(options.storage)
    path = study_dir / "study.json"
    if path.exists():  # rewritten at the end, or resumed: keep the first start and the code it started with
        try:
            first = json.loads(path.read_text())
        except ValueError:  # torn by a crash before writes were atomic: this run's values stand
            first = {}
        meta["started"] = first.get("started", started)
        meta["git_commit"] = first.get("git_commit", meta["git_commit"])
        # the plan stays as registered before the first trial (none for a study started before plans were)
        registered = first.get("plan")
        recorded = [d for d in first.get("deviations") or [] if isinstance(d, dict)]
    else:
        registered, recorded = registered_plan(plan, started), []
    if registered:
        meta["plan"] = registered
    deviations = recorded + [d for d in plan.deviations if d not in recorded]
    if deviations:
        meta["deviations"] = deviations
    write_atomic(path, json.dumps(meta, indent=2, default=str))


def _redact_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


LOG_FILE = "driver.log"
_ACTIVE: StudyStorage | None = None  # the study this driver runs: callbacks of a restored Tuner look it up here
_CONSOLE: "Console | None" = None


def say(line: str, err: bool = False):
    """One of the project's own lines (data, plan, progress, result): to the terminal and the study's log."""
    if _CONSOLE is not None:
        _CONSOLE.say(line, err)
    else:
        print(line, file=sys.stderr if err else sys.stdout, flush=True)


class Console:
    """While a study runs, the terminal shows the project's own lines; everything else the process writes (Ray's
    banners and tables, its C++ log lines) goes to the study's driver.log, and to the terminal too with --verbose.
    Redirecting file descriptors 1 and 2 is what catches output written below Python."""

    def __init__(self, log_path: Path, verbose: bool, command: list[str]):
        self.log_path, self.verbose, self.command = log_path, verbose, command

    def __enter__(self):
        global _CONSOLE
        sys.stdout.flush()
        sys.stderr.flush()
        self.log = open(self.log_path, "a", buffering=1)
        self.log.write(
            f"\n==== {datetime.now(UTC).isoformat(timespec='seconds')} python -m study.run "
            f"{shlex.join(redacted_argv(self.command))}\n"
        )
        self.saved = None
        if not self.verbose:
            self.saved = (os.dup(1), os.dup(2))
            os.dup2(self.log.fileno(), 1)
            os.dup2(self.log.fileno(), 2)
        _CONSOLE = self
        return self

    def say(self, line: str, err: bool = False):
        if self.saved:
            os.write(self.saved[1 if err else 0], (line + "\n").encode())
            self.log.write(line + "\n")
        else:
            print(line, file=sys.stderr if err else sys.stdout, flush=True)
            self.log.write(line + "\n")

    def __exit__(self, *exc):
        global _CONSOLE
        _CONSOLE = None
        sys.stdout.flush()
        sys.stderr.flush()
        if self.saved:
            for fd, saved in zip((1, 2), self.saved):
                os.dup2(saved, fd)
                os.close(saved)
        self.log.close()


def execute(plan, study: StudyStorage, resuming: bool) -> int:
    """Runs the study and returns the exit status: 0 done, 1 every trial failed (or the results could not be
    written), 130 interrupted (resume it). Whatever happens after the Tuner starts, the study's files are
    written and pushed as far as they can be, and a failure is one line (its traceback goes to driver.log)."""
    global _ACTIVE
    _ACTIVE = study
    study.local.mkdir(parents=True, exist_ok=True)
    with Console(study.local / LOG_FILE, plan.options.verbose, plan.command(plan.options.resume)) as console:
        status = 1
        try:
            status = _run(plan, study, resuming)
        except Exception as e:
            import traceback

            traceback.print_exc(file=console.log)
            again = "; continue with --resume" if any(study.local.glob("tune*/tuner.pkl")) else ""
            say(
                f"error: the study stopped: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''} "
                f"(details in {join(study.shown, LOG_FILE)}{again})",
                err=True,
            )
        finally:
            with span("ray_shutdown"):
                ray.shutdown()
            try:
                study.files.push()
            except OSError as e:
                say(
                    f"error: could not push the study's files to {study.uri}: {str(e).splitlines()[0]}; they are "
                    f"kept in {study.local}",
                    err=True,
                )
                return 1
        study.discard()
        return status


def _run(plan, study: StudyStorage, resuming: bool) -> int:
    spec, profile, options, workers = plan.spec, plan.profile, plan.options, plan.workers
    study_dir = study.local
    started = datetime.now(UTC).isoformat()
    resources = TrialResources(
        num_workers=workers,
        cpus_per_worker=options.cpus_per_worker,
        use_gpu=plan.gpus > 0,
        always_train=options.ray_train,
    )
    concurrent, resources = start_ray(options.address, resources, stops_early=spec.scheduler == "asha")
    write_study_json(plan, study_dir, started, None, False, concurrent)
    study.files.push()
    say(
        f"{spec.name} ({profile.name} profile): up to {concurrent} trials at once, {workers} worker(s) each; "
        f"results in {study.shown}"
    )
    if plan.sequential:
        interrupted = _run_rounds(plan, study, resources, concurrent, resuming)
    else:
        interrupted = _run_trials(plan, study, resources, concurrent, resuming)
    df = mark_audited(collect(study_dir, spec), plan)
    write_trials(df, study_dir)
    write_view_outputs(df, spec.views, study_dir)
    write_study_json(plan, study_dir, started, datetime.now(UTC).isoformat(), interrupted, concurrent)
    done = int((df["status"] == "done").sum()) if len(df) else 0
    failed = int((df["status"] == "failed").sum()) if len(df) else 0
    say(f"{len(df)} trials: {done} done, {failed} failed; {join(study.shown, 'trials.parquet')}")
    if not interrupted and not options.no_report:
        report_at_end(study_dir, study.shown)
    mark("results_end")
    if interrupted:
        # the same plan (profile, --set, ...) plus --resume: a study file's copy in study.json gives it by name
        say(f"interrupted: continue with  python -m study.run {shlex.join(redacted_argv(plan.command(resume=True)))}")
        return 130
    if len(df) and failed == len(df):
        reason = df["error"].dropna().iloc[0] if df["error"].notna().any() else "see the trials' error.txt"
        say(f"error: every trial failed ({failed} of {len(df)}); the first reason: {reason}", err=True)
        return 1
    if study.uri:
        say(f"to look at it here: python -m study.submit {spec.name} --fetch --output {options.output}")
    return 0


def _run_trials(plan, study: StudyStorage, resources, concurrent: int, resuming: bool) -> bool:
    """Runs the plan's trials, or continues them on --resume; True when interrupted."""
    spec, study_dir = plan.spec, study.local
    exps = experiment_dirs(study_dir)
    num_samples = plan.num_samples
    # seeds added on a --resume, by this run or by one a crash cut short (study.json records them)
    grown = resuming and spec.searcher == "grid" and _seeds_added(study_dir)
    if resuming and _confirming(study_dir):
        tuner = None  # the search had ended and its confirmation was cut short: only the confirmation continues
    elif resuming and spec.searcher == "optuna" and _finished(exps[-1]):
        exp_name = f"tune_{len(exps) + 1}"  # Tune cannot extend a finished experiment (ray#42221): a new one, same Optuna study
        say(f"extending the finished search with {num_samples} trials ({exp_name})")
        tuner, _, _ = build_tuner(plan, study, resources, concurrent, exp_name)
    elif resuming and not (grown and _finished(exps[-1]) and _not_run_yet(plan, study_dir)):
        exp = join(study.root, exps[-1].name)
        say(f"resuming {exp}: finished trials are kept, unfinished ones continue from their checkpoints")
        # The pickled Tuner brings back its callbacks, searcher state and trial names.
        tuner = _restore(exp, trial_trainable(plan, study, resources))
    elif not resuming:
        tuner, _, _ = build_tuner(plan, study, resources, concurrent, "tune")
    else:
        tuner = None  # every planned trial has ended, and more seeds are asked for: they run below
    interrupted = _fit(tuner, study, study_dir) if tuner else False
    new = _not_run_yet(plan, study_dir) if grown and not interrupted else []
    if new:  # --seeds grew on --resume: a finished Tune experiment takes no new trials (ray#42221), so a new one
        exp_name = f"tune_{len(experiment_dirs(study_dir)) + 1}"
        say(f"adding the {len(new)} trials of the new seeds ({exp_name})")
        tuner, _, _ = build_tuner(narrowed(plan, new), study, resources, concurrent, exp_name)
        interrupted = _fit(tuner, study, study_dir)
    return interrupted or confirm_best(plan, study, resources, concurrent)


def _run_rounds(plan, study: StudyStorage, resources, concurrent: int, resuming: bool) -> bool:
    """--seeds auto: round 1 runs the first seeds of every arm, each later round the next seed of the arms still
    undecided (and of the baseline), each round a Tune experiment of its own (tune, tune_2, ...), so a --resume
    continues the round it stopped in and then decides from the trials on disk; True when interrupted."""
    from reports.sequential import MIN_SEEDS, decide, undecided_arms
    from study.sequential import next_round, surely_run

    spec, options, study_dir = plan.spec, plan.options, study.local
    seeds = plan.axes["seed"]
    exps = experiment_dirs(study_dir)
    if resuming and exps and not _finished(exps[-1]):
        say(f"resuming round {len(exps)} ({exps[-1].name}): finished trials are kept, unfinished ones continue")
        tuner = _restore(join(study.root, exps[-1].name), trial_trainable(plan, study, resources))
        if _fit(tuner, study, study_dir):
            return True
    elif not exps:
        first = surely_run(plan)
        say(f"round 1: seeds {', '.join(map(str, seeds[:MIN_SEEDS]))} of every arm ({len(first)} trials, tune)")
        tuner, _, _ = build_tuner(narrowed(plan, first), study, resources, concurrent, "tune")
        if _fit(tuner, study, study_dir):
            return True
    while True:
        rounds = len(experiment_dirs(study_dir))
        df = collect(study_dir, spec)
        decisions = decide(df, spec.baseline_arm, options.mde, options.alpha, len(seeds), spec.metric, spec.mode)
        for row in decisions.itertuples():
            say(f"  {row.variant}: {row.status}, {row.why}")
        undecided = undecided_arms(decisions)
        index = MIN_SEEDS + rounds - 1  # round r >= 2 runs the seed axis' value number r (from 0)
        if not undecided:
            say(f"every arm is decided after round {rounds}")
            return False
        if index >= len(seeds):
            say(f"the cap of {len(seeds)} seeds is reached with {', '.join(undecided)} undecided")
            return False
        trials = next_round(plan, decisions, seeds[index])
        exp_name = f"tune_{rounds + 1}"
        say(
            f"round {rounds + 1}: seed {seeds[index]} of {', '.join(undecided)} and the baseline "
            f"({len(trials)} trials, {exp_name})"
        )
        tuner, _, _ = build_tuner(narrowed(plan, trials), study, resources, concurrent, exp_name)
        if _fit(tuner, study, study_dir):
            return True


def _restore(exp: str, trainable):
    """A Tune experiment's pickled Tuner (callbacks, searcher state, trial names): finished trials are kept,
    unfinished ones continue from their checkpoints, failed ones stay failed."""
    return tune.Tuner.restore(
        exp, trainable=trainable, resume_unfinished=True, resume_errored=False, restart_errored=False
    )


def _fit(tuner, study: StudyStorage, study_dir: Path, exp_dir: Path | None = None) -> bool:
    """Runs a Tuner (of exp_dir; None: the study's last search experiment); True when it was interrupted (a trial
    left unfinished)."""
    mark("fit_start")
    results = tuner.fit()
    mark("fit_end")
    study.refresh()
    exp_dir = exp_dir or experiment_dirs(study_dir)[-1]
    return any(r.metrics is None and r.error is None for r in results) or not _finished(exp_dir)


# ----------------------------------------------------------------------------- confirmation (--set confirm_top)


def confirm_best(plan, study: StudyStorage, resources, concurrent: int) -> bool:
    """--set confirm_top=K confirm_seeds=M: once an Optuna search has ended, its K best finished configs (by the
    study's metric, the mean over --seeds) train again with M new seeds each (the search's N seeds are 0..N-1, so
    N..N+M-1: a leader's own draws would repeat the luck that made it lead), as trials NAME_confirm of a Tune
    experiment of their own (confirm; confirm_2 after an extension's new leaders). A confirmation cut short
    continues on --resume; a config already confirmed is not run again. True when interrupted."""
    top, seeds = plan.confirm
    if not top:
        return False
    study_dir = study.local
    held = confirm_dirs(study_dir)
    if held and not _finished(held[-1]):
        exp = join(study.root, held[-1].name)
        say(f"resuming the confirmation {exp}: finished trials are kept, unfinished ones continue")
        tuner = _restore(exp, trial_trainable(plan, study, resources))
        if _fit(tuner, study, study_dir, held[-1]):
            return True
    confirmed = {name for exp in confirm_dirs(study_dir) for name in _trial_names(exp)}
    best = best_configs(collect(study_dir, plan.spec), plan.spec, top)
    if len(best) < top:
        say(
            f"note: confirm_top={top}, but {len(best)} of the search's trials ran to their end (the rest failed or "
            f"were stopped early): {'confirming those' if best else 'nothing to confirm'}"
        )
    configs = [
        {**_searched_config(study_dir, name), "seeds": seeds, "first_seed": plan.options.seeds, "confirm_of": name}
        for name in best
        if f"{name}_confirm" not in confirmed
    ]
    if not configs:
        return False
    exp_name = f"confirm_{len(confirm_dirs(study_dir)) + 1}" if confirm_dirs(study_dir) else "confirm"
    say(
        f"confirming the {len(configs)} best configs ({', '.join(c['confirm_of'] for c in configs)}) with seeds "
        f"{plan.options.seeds}..{plan.options.seeds + seeds - 1} each ({exp_name})"
    )
    tuner = confirm_tuner(plan, study, resources, concurrent, exp_name, configs)
    return _fit(tuner, study, study_dir, study_dir / exp_name)


def best_configs(df, spec, top: int) -> list[str]:
    """The names of a search's `top` best finished trials by spec.metric (mode-aware), confirmations left out."""
    if not len(df) or spec.metric not in df:
        return []
    search = df[(df["status"] == "done") & df[spec.metric].notna()]
    if "confirm_of" in search:
        search = search[search["confirm_of"].isna()]
    return search.sort_values(spec.metric, ascending=spec.mode == "min", kind="stable")["trial"].head(top).tolist()


def _searched_config(study_dir: Path, name: str) -> dict:
    """The config Tune gave a search trial (its constant keys and the values Optuna drew), as params.json has it."""
    for exp in experiment_dirs(study_dir):
        path = exp / name / "params.json"
        if path.exists():
            return json.loads(path.read_text())
    raise RuntimeError(f"no params.json for trial {name} in {[e.name for e in experiment_dirs(study_dir)]}")


def _trial_names(exp_dir: Path) -> set[str]:
    states = sorted(exp_dir.glob("experiment_state-*.json"))
    if not states:
        return set()
    return {json.loads(meta).get("custom_trial_name") for meta, _ in json.loads(states[-1].read_text())["trial_data"]}


def _confirming(study_dir: Path) -> bool:
    """Whether the study's last confirmation was cut short."""
    held = confirm_dirs(study_dir)
    return bool(held) and not _finished(held[-1])


def confirm_tuner(plan, study: StudyStorage, resources, concurrent: int, exp_name: str, configs: list[dict]):
    """A grid over the configs to confirm, each one trial of its seeds in lockstep (trainables.train.train_seeds)."""

    def name_of(trial):
        return f"{flat(trial.config)['confirm_of']}_confirm"

    return tune.Tuner(
        trial_trainable(plan, study, resources),
        param_space={AXES: tune.grid_search(configs)},
        tune_config=tune.TuneConfig(
            num_samples=1,
            max_concurrent_trials=concurrent,
            trial_name_creator=name_of,
            trial_dirname_creator=name_of,
        ),
        run_config=tune.RunConfig(
            name=exp_name,
            storage_path=study.root,
            callbacks=tune_callbacks(plan, study, len(configs), concurrent, name_of),
            verbose=0,
            **tune_run_settings(resources),
        ),
    )


def _seeds_added(study_dir: Path) -> bool:
    meta = json.loads((study_dir / "study.json").read_text())
    return any(d.get("kind") == "seeds" for d in meta.get("deviations") or [])


def _not_run_yet(plan, study_dir: Path) -> list[dict]:
    """The planned trials no Tune experiment of the study holds: the seeds a --resume added."""
    held = set()
    for exp in experiment_dirs(study_dir):
        states = sorted(exp.glob("experiment_state-*.json"))
        if states:
            held |= {
                json.loads(meta).get("custom_trial_name")
                for meta, _ in json.loads(states[-1].read_text())["trial_data"]
            }
    return [t for t in plan.trials if t["name"] not in held]


def narrowed(plan, trials: list[dict]):
    """The plan narrowed to some of its trials, for a Tune experiment of their own: every axis keeps the values these
    trials use, in the plan's order (build_tuner grids over the trials themselves where these are no product)."""
    used = {k: {repr(t["searched"][k]) for t in trials} for k in plan.axes}  # repr: values may be lists or dicts
    axes = {k: [v for v in values if repr(v) in used[k]] for k, values in plan.axes.items()}
    return replace(plan, axes=axes, trials=trials)


def _finished(exp_dir: Path) -> bool:
    """Whether every trial of a Tune experiment has ended (TERMINATED or ERROR)."""
    states = sorted(exp_dir.glob("experiment_state-*.json"))
    if not states:
        return False
    state = json.loads(states[-1].read_text())
    trials = state.get("trial_data", [])
    statuses = [json.loads(t[0]).get("status") if isinstance(t, list) else None for t in trials]
    return bool(statuses) and all(s in ("TERMINATED", "ERROR") for s in statuses)


def report_at_end(study_dir: Path, shown: str):
    """reports.build.build_report, where a failure warns instead of losing the study's results."""
    from reports.build import build_report

    try:
        out = build_report(study_dir)
        say(f"report: {join(shown, 'report.html')}")
        return out
    except Exception as e:  # a report failure must not lose the study's results
        say(f"warning: the report could not be built ({type(e).__name__}: {e}); results are in {shown}", err=True)
