"""Bad values are refused before Ray starts, and a value that passes takes effect.

- Each value a user once typed by hand that passed planning and then failed in every trial now exits 2 with one
  line naming the key, the value and the allowed range, for a grid and an Optuna study, with --dry-run and
  without it (then before Ray starts and before anything is written under --output).
- device: one this machine lacks is refused on a local run; with --address only its form is checked.
- Every settable key of every study, changed to another valid value, either changes the planned trials or
  exits 2: none is silently dropped (as --set n_head=7 was, under nanohead_grid's budget solver).
- A plan is counted before it is built: --seeds 100000 exits 2 at once, and --max-trials raises the cap.
"""

import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, fields

import pytest
from study_cli import run_cli

SMOKE = ["--profile", "smoke"]
STUDIES = ["nanohead_grid", "nanohead_search"]  # a grid and an Optuna search

# The values typed by hand -> words the one line must hold: the key and value as parsed, and the allowed range.
BY_HAND = {
    "lr=1e999": ["lr=inf", "finite", "> 0"],  # 1e999 parses as inf
    "seed=-1": ["seed=-1", "[0, 2**32)"],
    "seed=99999999999999": ["seed=99999999999999", "[0, 2**32)"],
    "beta1=5": ["beta1=5", "[0, 1)"],
    "embedding_lr=-1": ["embedding_lr=-1", "> 0"],
    "weight_decay=-3": ["weight_decay=-3", ">= 0"],
    "max_tokens=-1": ["max_tokens=-1", ">= 1"],
    "device=cuda:7": ["device=cuda:7", "auto, cpu", "--address"],
}


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count()


def _one_error_line(code: int, err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def no_run_past_the_checks(monkeypatch):
    """A tripwire, not a stand-in: were a bad value to pass planning, the run would stop here instead of starting Ray
    on a shared machine (as in test_study_errors)."""
    import study.run
    import study.service

    def got_past_the_checks(*args, **kwargs):
        raise AssertionError("a bad value got past planning")

    monkeypatch.setattr(study.service, "execute", got_past_the_checks)
    monkeypatch.setattr(study.run, "prepare_data", got_past_the_checks)


# ----------------------------------------------------------------------------- the values typed by hand


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry_run", "run"])
@pytest.mark.parametrize("name", STUDIES)
@pytest.mark.parametrize("value", BY_HAND)
def test_value_typed_by_hand_exits_2_in_one_line(value, name, dry_run, capsys, tmp_path, no_run_past_the_checks):
    import study.run

    if value == "device=cuda:7" and _cuda_count() > 7:
        pytest.skip("this machine has a cuda:7")
    out = tmp_path / "out"
    code = study.run.main([name, *SMOKE, "--set", value, "--output", str(out), *(["--dry-run"] if dry_run else [])])
    line = _one_error_line(code, capsys.readouterr().err)
    for word in BY_HAND[value]:
        assert word in line, (word, line)
    assert not out.exists()
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


# As a user runs them (real processes, no tripwire): without --dry-run each still stops before Ray and --output.
CLI_CASES = [
    ("nanohead_grid", ["--set", "lr=1e999"], ["lr=inf", "> 0"]),
    ("nanohead_search", ["--set", "seed=-1"], ["seed=-1", "[0, 2**32)"]),
    ("nanohead_grid", ["--set", "device=cuda:7"], ["device=cuda:7", "auto, cpu"]),
    ("nanohead_grid", ["--seeds", "100000"], ["500,000 trials", "--max-trials"]),
    ("nanohead_grid", ["--set", "n_head=7"], ["n_head=7", "derives", "head_dim"]),
]


@pytest.fixture(scope="module")
def cli_outcomes(token_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("values_cli")

    def one(i_case):
        i, (study, argv, _) = i_case
        out = root / f"out{i}"
        t0 = time.time()
        proc = run_cli(token_cache, study, *SMOKE, *argv, "--output", out, timeout=180)
        return proc, out, time.time() - t0

    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(one, enumerate(CLI_CASES)))


@pytest.mark.parametrize("i", range(len(CLI_CASES)), ids=[" ".join(c[1]) for c in CLI_CASES])
def test_cli_without_dry_run_exits_2_before_ray_and_output(cli_outcomes, i):
    if "device=cuda:7" in CLI_CASES[i][1] and _cuda_count() > 7:
        pytest.skip("this machine has a cuda:7")
    proc, out, _ = cli_outcomes[i]
    line = _one_error_line(proc.returncode, proc.stderr)
    for word in CLI_CASES[i][2]:
        assert word in line, (word, line)
    assert not out.exists()
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- device


def test_a_device_this_machine_has_is_accepted():
    from study.catalog import STUDIES as SPECS
    from study.catalog import get_profile
    from study.run import plan_trials

    for device in ["auto", "cpu"] + (["cuda", f"cuda:{_cuda_count() - 1}"] if _cuda_count() else []):
        trials = plan_trials(SPECS["nanohead_grid"], get_profile("smoke"), {"device": device}, 1, 1)
        assert {t["train"].device for t in trials} == {device}


def test_with_address_only_the_device_form_is_checked(capsys):
    """The trials run on the cluster's nodes, which the driver cannot see: cuda:7 is the cluster's business."""
    import study.run

    code = study.run.main(
        ["nanohead_grid", *SMOKE, "--set", "device=cuda:7", "--address", "10.0.0.1:6379", "--dry-run"]
    )
    assert code == 0, capsys.readouterr().err
    code = study.run.main(
        ["nanohead_search", *SMOKE, "--set", "device=cuda:7", "--address", "10.0.0.1:6379", "--dry-run"]
    )
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    for bad in ("gpu0", "cuda:x", "cuda:-1"):  # a malformed device is wrong anywhere
        code = study.run.main(
            ["nanohead_grid", *SMOKE, "--set", f"device={bad}", "--address", "10.0.0.1:6379", "--dry-run"]
        )
        line = _one_error_line(code, capsys.readouterr().err)
        assert f"device='{bad}'" in line and "cuda:N" in line, line


def test_a_cuda_device_past_the_count_is_refused_locally(capsys):
    import study.run

    n = _cuda_count()
    code = study.run.main(["softmax1_ab", *SMOKE, "--set", f"device=cuda:{n}", "--dry-run"])
    line = _one_error_line(code, capsys.readouterr().err)
    assert f"device=cuda:{n}" in line and f"{n} CUDA device(s)" in line, line


# ----------------------------------------------------------------------------- the trial cap


def test_plan_is_counted_before_it_is_built(capsys):
    import study.run

    t0 = time.time()
    code = study.run.main(["nanohead_grid", *SMOKE, "--seeds", "100000", "--dry-run"])
    line = _one_error_line(code, capsys.readouterr().err)
    assert time.time() - t0 < 10  # it was over a minute and 700 MB, building 500,000 configs
    assert "500,000 trials" in line and "--max-trials 10,000" in line and "--max-trials 500000" in line, line


def test_max_trials_raises_and_lowers_the_cap(capsys):
    from study_cli import parse_table

    import study.run

    assert study.run.main(["nanohead_grid", *SMOKE, "--seeds", "3", "--max-trials", "15", "--dry-run"]) == 0
    assert len(parse_table(capsys.readouterr().out)) == 15  # 5 proportions x 3 seeds, at the cap
    code = study.run.main(["nanohead_grid", *SMOKE, "--seeds", "3", "--max-trials", "14", "--dry-run"])
    assert "15 trials" in _one_error_line(code, capsys.readouterr().err)
    code = study.run.main(["nanohead_search", *SMOKE, "--num-samples", "5", "--max-trials", "4", "--dry-run"])
    assert "--num-samples 5" in _one_error_line(code, capsys.readouterr().err)
    code = study.run.main(["nanohead_grid", *SMOKE, "--max-trials", "0", "--dry-run"])
    assert "--max-trials 0" in _one_error_line(code, capsys.readouterr().err)


@pytest.mark.parametrize("seeds", [1, 3])
def test_the_count_is_the_plan_length(seeds):
    """The count the cap is checked against, for every grid study, is the length of the grid it stands for."""
    from search_spaces.spec import grid_axes, grid_configs
    from study.catalog import STUDIES as SPECS
    from study.catalog import get_profile

    for spec in SPECS.values():
        if spec.searcher != "grid":
            continue
        for overrides in ({}, {"lr": [1e-3, 2e-3]}, {"seed": 4}):
            base, axes = grid_axes(spec, get_profile("smoke"), overrides, seeds)
            assert math.prod(map(len, axes.values())) == len(grid_configs(base, axes))


# ----------------------------------------------------------------------------- every key takes effect or exits 2

# Keys a change of which cannot show in a trial's model or training config, and why.
NOT_VARIED = {
    ("nanohead_search", "objective"): "steers the sampler (TPE or NSGA-II), not a trial: test_study_dry_run checks "
    "the dry run names NSGA-II for objective=multi",
    **dict.fromkeys(
        [("nanohead_grid", "shape_rule"), ("nanohead_search", "shape_rule")],
        "at smoke's budget both rules size 2 layers x 64 (the solver's pick is nanochat's d2); "
        "test_nanohead_paper checks the nanochat rule where they differ (paper: 7 x 512)",
    ),
}
# They size a model from a budget: what they change must show in its dims, not in themselves.
SOLVER_INPUTS = ("budget", "head_dim", "aspect_ratio")
# Fields whose value is None in a plan: a typical value of theirs (smoke: 8 x 64 tokens a micro-step).
WHEN_NONE = {
    "total_batch_tokens": [1024],
    "max_tokens": [100_000],
    "embedding_lr": [0.01],
    "lm_head_lr": [0.01],
    "budget": [1.6e5],
    "max_tokens_per_param": [20],
    "match": ["flops"],  # scaling's design: params unless set
    "compute": [1e10],  # match=flops keys: refused without it
    "tokens_per_param": [4.5],
    "logit_softcap": [15.0],
}


def _choices() -> dict:
    from search_spaces.scaling import VARIANTS
    from trainables.model.config import ARCHS, ATTN_BACKENDS, INITS, MIXERS, TOEP_FILTERS, TOEP_INITS
    from trainables.train import DTYPES, MUON_ADJUST_LR, OPTIMIZERS, SCHEDULES, SHAPE_RULES, WD_SCHEDULES

    return dict(
        schedule=SCHEDULES,
        optimizer=OPTIMIZERS,
        dtype=DTYPES,
        mixer=MIXERS,
        attn_backend=ATTN_BACKENDS,
        arch=ARCHS,
        device=("auto", "cpu"),
        tokenizer=("bpe:512", "bpe:1024"),
        scaling_variant=tuple(VARIANTS),
        objective=("single", "multi"),
        arm=("baseline", "variant"),
        toep_filter=TOEP_FILTERS,
        toep_init=TOEP_INITS,
        shape_rule=SHAPE_RULES,
        wd_schedule=WD_SCHEDULES,
        muon_adjust_lr=MUON_ADJUST_LR,
        init=INITS,
    )


def changed_values(key: str, value, corpus: str) -> list:
    """Other valid values of a key, by a small rule: a bool flipped, an int doubled, +1 or halved, a float doubled, halved
    or moved halfway to 1 (so a fraction stays in range), text from its allowed list, None a typical value."""
    if key == "corpus":
        candidates = [corpus]
    elif isinstance(value, str):
        candidates = list(_choices()[key])
    elif value is None:
        candidates = WHEN_NONE[key]
    elif isinstance(value, bool):
        candidates = [not value]
    elif isinstance(value, int) and key not in _float_fields():
        candidates = [2 * value, value + 1] + ([value // 2] if value > 1 else []) if value else [1, 2]
    else:  # x10 and /10 too: the solver moves to another depth only for a large change of aspect_ratio
        candidates = [2 * value, value / 2, (1 + value) / 2, 10 * value, value / 10] if value else [0.5]
    return [c for c in candidates if c != value]


def _float_fields() -> set:
    """Config fields declared float (a profile may give one as an int, like aspect_ratio=32)."""
    from trainables.model import GPTConfig
    from trainables.train import TrainConfig

    return {f.name for f in fields(GPTConfig) + fields(TrainConfig) if "float" in str(f.type)}


def _text(value) -> str:
    return (
        "none"
        if value is None
        else str(value).lower()
        if isinstance(value, bool)
        else repr(value)
        if isinstance(value, float)
        else str(value)
    )


def _plan(spec, profile, overrides: dict):
    """What the planned trials run: each one's name, model config and training config (its solver inputs left
    out: their effect is the dims). A grid's trials, or a search's draws."""
    from study.run import plan_trials, validate_search

    items = (
        plan_trials(spec, profile, overrides, 1, 1)
        if spec.searcher == "grid"
        else validate_search(spec, profile, overrides, n=4)
    )
    return [
        (t.get("name"), t["gpt"].to_dict(), {k: v for k, v in asdict(t["train"]).items() if k not in SOLVER_INPUTS})
        for t in items
    ], items


def walk(study: str, corpus: str) -> dict:
    """key -> ("changed", value) | ("refused", error lines) | ("ignored", values), for every settable key."""
    from search_spaces.spec import RUN_KEYS
    from study.catalog import STUDIES as SPECS
    from study.catalog import get_profile
    from study.run import UsageError, check_overrides, parse_set

    spec, profile = SPECS[study], get_profile("smoke")
    baseline, items = _plan(spec, profile, {})
    first = items[0]
    built = {**asdict(first["train"]), **first["gpt"].to_dict()}
    outcome = {}
    # RUN_KEYS steer how the study runs, not a trial (audit_fraction: tests/study/test_pruning_audit.py)
    for key in sorted(spec.settable_keys(profile) - set(RUN_KEYS)):
        current = first["searched"].get(key, built.get(key))
        errors, ignored = [], []
        for value in changed_values(key, current, corpus):
            try:
                planned = _plan(spec, profile, check_overrides(spec, profile, parse_set([f"{key}={_text(value)}"])))[0]
            except UsageError as e:
                errors.append(str(e))
                continue
            if planned != baseline:
                outcome[key] = ("changed", value)
                break
            ignored.append(value)
        else:
            outcome[key] = ("ignored", ignored) if ignored else ("refused", errors)
    return outcome


@pytest.fixture(scope="module")
def walks(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text("A small corpus of its own.\n\nAnother document.\n")
    from study.catalog import STUDIES as SPECS

    return {study: walk(study, str(corpus)) for study in SPECS}


@pytest.mark.parametrize(
    "study", ["nanohead_grid", "nanohead_search", "softmax1_ab", "toeplitz_flags", "vocab_depth", "scaling"]
)
def test_every_settable_key_takes_effect_or_exits_2(walks, study):
    ignored = {key: values for key, (kind, values) in walks[study].items() if kind == "ignored"}
    assert set(ignored) == {key for s, key in NOT_VARIED if s == study}, ignored
    assert walks[study], "no keys walked"


def test_keys_a_study_derives_are_refused_naming_what_to_set(walks):
    """The refusals the walk met: the derived keys, each with its source (not the value's own range)."""
    grid = walks["nanohead_grid"]
    for key in ("n_layer", "n_embd", "n_head"):
        kind, errors = grid[key]
        assert kind == "refused" and all("derives" in e and "budget, head_dim and aspect_ratio" in e for e in errors), (
            errors
        )
    assert grid["vocab_size"][0] == "refused" and "tokenizer=bpe:N" in grid["vocab_size"][1][0]
    assert (
        walks["vocab_depth"]["tokenizer"][0] == "refused"
        and "set vocab_size" in walks["vocab_depth"]["tokenizer"][1][0]
    )
    assert walks["vocab_depth"]["aspect_ratio"][0] == "refused"
    for study in ("softmax1_ab", "toeplitz_flags"):  # dims given by hand: the solver's inputs have nothing to size
        for key in ("head_dim", "aspect_ratio"):
            assert walks[study][key][0] == "refused" and "budget" in walks[study][key][1][0]


def test_n_head_is_refused_and_head_dim_changes_the_heads(capsys):
    """The case that started this: --set n_head=7 planned 4 heads as if nothing was said."""
    from study_cli import parse_table

    import study.run

    code = study.run.main(["nanohead_grid", *SMOKE, "--set", "n_head=7", "--dry-run"])
    line = _one_error_line(code, capsys.readouterr().err)
    assert "--set n_head=7" in line and "nanohead_grid derives n_head" in line and "head_dim" in line, line
    assert study.run.main(["nanohead_grid", *SMOKE, "--set", "head_dim=16", "--dry-run"]) == 0
    rows = parse_table(capsys.readouterr().out)
    assert all(r["width"] == 16 * r["heads"] for r in rows), rows  # heads of 16, not the profile's 32
    assert (
        study.run.main(
            ["nanohead_grid", *SMOKE, "--set", "budget=none", "--set", "n_embd=112", "--set", "n_head=7", "--dry-run"]
        )
        == 0
    )  # without a budget n_head is the user's
    assert {r["heads"] for r in parse_table(capsys.readouterr().out)} == {7}


def test_seed_with_seeds_is_refused(capsys):
    import study.run

    code = study.run.main(["nanohead_grid", *SMOKE, "--seeds", "3", "--set", "seed=5", "--dry-run"])
    line = _one_error_line(code, capsys.readouterr().err)
    assert "seed=5" in line and "--seeds" in line and "--set init_seed or data_seed" in line, line


def test_one_seed_held_still_while_seeds_vary_the_other():
    """--set init_seed=3 --seeds 2: one init, the data seeds 0 and 1 (and the reverse); a list of one of them is an
    axis of replicates, not of arms. The names say which seed was held."""
    from study.catalog import STUDIES as SPECS
    from study.catalog import get_profile
    from study.run import check_overrides, parse_set, plan_trials

    spec, profile = SPECS["softmax1_ab"], get_profile("smoke")

    def plan(seeds, *sets):
        trials = plan_trials(spec, profile, check_overrides(spec, profile, parse_set(list(sets))), seeds, 1)
        return {t["name"]: (spec.arm(t["config"]), t["train"].init_seed, t["train"].data_seed) for t in trials}

    assert plan(2, "init_seed=3") == {
        "softmax1_ab_softmax_i3": ("softmax", 3, 0),
        "softmax1_ab_softmax_s1_i3": ("softmax", 3, 1),
        "softmax1_ab_softmax1_i3": ("softmax1", 3, 0),
        "softmax1_ab_softmax1_s1_i3": ("softmax1", 3, 1),
    }
    assert set(plan(2, "data_seed=0").values()) == {(arm, s, 0) for arm in ("softmax", "softmax1") for s in (0, 1)}
    assert plan(1, "data_seed=0,5") == {
        "softmax1_ab_softmax_d0": ("softmax", 0, 0),
        "softmax1_ab_softmax_d5": ("softmax", 0, 5),
        "softmax1_ab_softmax1_d0": ("softmax1", 0, 0),
        "softmax1_ab_softmax1_d5": ("softmax1", 0, 5),
    }
    assert plan(2) == {  # neither set: the names as ever, both seeds the trial's seed
        "softmax1_ab_softmax": ("softmax", 0, 0),
        "softmax1_ab_softmax_s1": ("softmax", 1, 1),
        "softmax1_ab_softmax1": ("softmax1", 0, 0),
        "softmax1_ab_softmax1_s1": ("softmax1", 1, 1),
    }


def test_total_batch_tokens_must_split_into_micro_steps(capsys):
    import study.run

    code = study.run.main(["nanohead_grid", *SMOKE, "--set", "total_batch_tokens=1000", "--dry-run"])
    line = _one_error_line(code, capsys.readouterr().err)
    assert "total_batch_tokens=1000" in line and "512" in line, line  # 8 sequences x 64 tokens x 1 worker
    assert study.run.main(["nanohead_grid", *SMOKE, "--set", "total_batch_tokens=1024", "--dry-run"]) == 0


@pytest.mark.parametrize(
    "argv,words",
    [
        (["scaling", "--set", "budget=none"], ["budget=None", "scaling"]),
        (["vocab_depth", "--set", "budget=none"], ["budget=None", "vocab_depth"]),
        (["scaling", "--set", "max_tokens_per_param=-1"], ["max_tokens_per_param=-1", "> 0"]),
        (["scaling", "--set", "max_tokens_per_param=1e999"], ["max_tokens_per_param=inf", "finite"]),
        (["scaling", "--set", "arm=both"], ["arm='both'", "baseline or variant"]),
        (["nanohead_grid", "--set", "budget=1e999"], ["budget=inf", "finite"]),
    ],
    ids=[
        "scaling_budget_none",
        "vocab_depth_budget_none",
        "tokens_per_param_negative",
        "tokens_per_param_inf",
        "scaling_arm",
        "budget_inf",
    ],
)
def test_study_keys_out_of_range_exit_2(argv, words, capsys):
    import study.run

    code = study.run.main([*argv, *SMOKE, "--dry-run"])
    line = _one_error_line(code, capsys.readouterr().err)
    for word in words:
        assert word in line, (word, line)
