"""A user's own study: a .toml or .py file, run with every option the named studies take, checked before Ray
starts (one line naming the file and the key, exit 2, nothing written), its file kept in study.json.

The examples/ files are the README's: the TOML A/B and the .py that registers a causal convolution mixer run end
to end at the smoke profile (marked ray); a mixer that looks ahead is refused before Ray starts."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from study_cli import ROOT, cli_env

EXAMPLES = ROOT / "examples"
QKNORM = EXAMPLES / "qknorm_ab.toml"
LOOKAHEAD = '''
import torch
from torch import nn
from study import StudySpec, register_mixer


class PeekNext(nn.Module):
    """Mixes each position with the next one: it sees the future."""

    has_cache = False

    def __init__(self, cfg):
        super().__init__()
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x, cache=None):
        return self.proj(x + torch.roll(x, shifts=-1, dims=1))


register_mixer("peek_next", PeekNext)
STUDY = StudySpec(name="peek", hypothesis="Seeing the next token helps", axes={"mixer": ["attention", "peek_next"]},
                  base={"n_layer": 2}, baseline={"mixer": "attention"})
'''


def _run(cwd: Path, cache: str, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "study.run", *map(str, args)],
        cwd=cwd,
        env=cli_env(cache),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def _toml(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = QKNORM.read_text()

BAD = {
    "unknown_top_key": ('colour = "red"\n' + GOOD, ["mine.toml", "colour", "allowed"]),
    "unknown_base_key": (GOOD.replace("n_layer = 2", "n_layers = 2"), ["mine.toml", "[base] n_layers", "allowed"]),
    "wrong_type": (GOOD.replace("n_layer = 2", 'n_layer = "two"'), ["mine.toml", "[base] n_layer='two'", "integer"]),
    "empty_axis": (GOOD.replace("qk_norm = [true, false]", "qk_norm = []"), ["mine.toml", "axes.qk_norm", "non-empty"]),
    "baseline_not_an_arm": (
        GOOD.replace("baseline = { qk_norm = true }", "baseline = { qk_norm = 3 }"),
        ["mine.toml", "baseline.qk_norm=3", "[True, False]"],
    ),
    "baseline_not_an_axis": (
        GOOD.replace("baseline = { qk_norm = true }", "baseline = { softmax1 = true }"),
        ["mine.toml", "baseline.softmax1", "an axis"],
    ),
    "name_not_an_identifier": (
        GOOD.replace('name = "qknorm_ab"', 'name = "QK norm!"'),
        ["mine.toml", "name=", "a-z0-9"],
    ),
    "not_toml": ("name = \n", ["mine.toml", "not valid TOML"]),
    "space_in_a_grid": (GOOD + "\n[space]\nlr = { low = 1e-4, high = 1e-2 }\n", ["mine.toml", "[space]", "optuna"]),
    "bad_distribution": (
        'name = "s"\nhypothesis = "h"\nsearcher = "optuna"\n[space]\nlr = { low = 1e-2, high = 1e-4 }\n',
        ["mine.toml", "[axes] lr", "low < high"],
    ),
    "unknown_profile": (GOOD + "\n[profiles.huge]\nn_layer = 3\n", ["mine.toml", "profiles.huge", "smoke"]),
    "list_in_base": (GOOD.replace("n_layer = 2", "n_layer = [2, 3]"), ["mine.toml", "[base] n_layer", "[axes]"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_study_file_is_one_line_and_writes_nothing(case, tmp_path, token_cache):
    text, needles = BAD[case]
    path = _toml(tmp_path, text)
    line = _one_line(_run(tmp_path, token_cache, path, "--profile", "smoke", "--dry-run"))
    for needle in needles:
        assert needle in line, (needle, line)
    assert not (tmp_path / "results").exists()


def test_the_toml_example_plans_its_two_arms(tmp_path, token_cache):
    proc = _run(tmp_path, token_cache, QKNORM, "--profile", "smoke", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "qknorm_ab: 2 trials" in proc.stdout
    assert "qknorm_ab_qk_norm-true" in proc.stdout and "qknorm_ab_qk_norm-false" in proc.stdout
    assert "qk_norm=true" in proc.stdout and "qk_norm=false" in proc.stdout  # the arms
    assert not (tmp_path / "results").exists()


def test_the_plan_takes_the_files_keys_and_the_options():
    """Every key of the file reaches the trial config; --set and --seeds act on a file's study as on a named one."""
    from study.files import load_study_file
    from study.run import RunOptions, make_plan

    plan = make_plan(load_study_file(str(QKNORM)), RunOptions(profile="smoke", seeds=2, set={"lr": 0.002}))
    configs = [t["config"] for t in plan.trials]
    assert [(c["qk_norm"], c["seed"]) for c in configs] == [(True, 0), (True, 1), (False, 0), (False, 1)]
    assert {c["n_layer"] for c in configs} == {2} and {c["lr"] for c in configs} == {0.002}
    assert {t["gpt"].qk_norm for t in plan.trials} == {True, False}
    assert plan.spec.baseline_arm == "qk_norm=true"


def test_a_budget_sizes_every_arm_by_the_solver():
    """With a budget, each arm is sized to it with its own keys (the solver), within its 5%."""
    from study.files import load_study_text
    from study.run import RunOptions, make_plan
    from trainables.model import count_params

    text = 'name = "budgeted"\nhypothesis = "h"\n[base]\nbudget = 2.5e5\n[axes]\nmlp_ratio = [2.0, 4.0]\n'
    plan = make_plan(load_study_text(text, "budgeted.toml"), RunOptions(profile="smoke"))
    widths = set()
    for t in plan.trials:
        total = count_params(t["gpt"])["total"]
        assert abs(total - 2.5e5) / 2.5e5 <= 0.05, (t["name"], total)
        widths.add((t["gpt"].n_layer, t["gpt"].n_embd))
    assert len(widths) == 2, "arms with other MLP widths get other dims at the same budget"


def test_a_python_study_with_a_mixer_that_looks_ahead_is_refused_before_ray(tmp_path, token_cache):
    path = tmp_path / "peek.py"
    path.write_text(LOOKAHEAD)
    for extra in (["--dry-run"], []):
        line = _one_line(_run(tmp_path, token_cache, path, "--profile", "smoke", *extra))
        assert "peek_next" in line and "causal" in line, line
    assert not (tmp_path / "results").exists()


def test_a_python_study_without_study_is_refused(tmp_path, token_cache):
    path = tmp_path / "nothing.py"
    path.write_text("x = 1\n")
    assert "defines no STUDY" in _one_line(_run(tmp_path, token_cache, path, "--dry-run"))
    path.write_text("def broken(:\n")
    assert "cannot be loaded: SyntaxError" in _one_line(_run(tmp_path, token_cache, path, "--dry-run"))


def test_run_study_validates_as_the_cli_does(tmp_path, token_cache):
    """The API raises the CLI's one-line message as a UsageError (a ValueError)."""
    from study import UsageError, run_study

    with pytest.raises(UsageError) as e:
        run_study(str(QKNORM), profile="smoke", set={"n_layers": 2}, output=str(tmp_path / "r"))
    assert isinstance(e.value, ValueError)
    cli = _one_line(_run(tmp_path, token_cache, QKNORM, "--profile", "smoke", "--set", "n_layers=2"))
    assert cli == f"error: {e.value}"
    with pytest.raises(UsageError, match="unknown option 'profiles'"):
        run_study("nanohead_grid", profiles="smoke")
    plan = run_study("nanohead_grid", profile="smoke", dry_run=True)
    assert [t["name"] for t in plan.trials][:2] == ["nanohead_p00_d2", "nanohead_p20_d2"]
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- end to end (Ray)


@pytest.mark.ray
def test_the_toml_study_runs_resumes_by_name_and_reports(tmp_path, token_cache):
    """The README's command in a fresh folder: two done trials with qk_norm per trial, a report comparing the
    arms; study.json keeps the file, so with the file gone --resume by name continues (nothing retrained)."""
    shutil.copy(QKNORM, tmp_path / "qknorm_ab.toml")
    proc = _run(tmp_path, token_cache, "qknorm_ab.toml", "--profile", "smoke")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = tmp_path / "results" / "qknorm_ab"
    df = pd.read_parquet(study / "trials.parquet")
    assert sorted(df["status"]) == ["done", "done"]
    assert sorted(df["qk_norm"]) == [False, True]
    assert sorted(df["variant"]) == ["qk_norm=false", "qk_norm=true"]
    meta = json.loads((study / "study.json").read_text())
    assert meta["study_file"] == {"name": "qknorm_ab.toml", "text": QKNORM.read_text()}
    assert meta["baseline"] == {"variant": "qk_norm=true"}
    html = (study / "report.html").read_text()
    assert "qk_norm=false" in html and "qk_norm=true" in html and "QK norm lowers val_bpb" in html
    before = {p: p.stat().st_mtime for p in study.glob("trials/*/metrics.jsonl")}

    (tmp_path / "qknorm_ab.toml").unlink()
    again = _run(tmp_path, token_cache, "qknorm_ab", "--profile", "smoke", "--resume")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert {p: p.stat().st_mtime for p in study.glob("trials/*/metrics.jsonl")} == before


@pytest.mark.ray
def test_the_python_study_registers_its_mixer_and_trains_it(tmp_path, token_cache):
    """examples/conv_mixer.py: the mixer it registers reaches the trial processes and trains; both arms sized to
    the budget; FLOPs and parameters are the mixer's own."""
    from study.files import load_study_file
    from trainables.model import build_model, count_params

    proc = _run(tmp_path, token_cache, EXAMPLES / "conv_mixer.py", "--profile", "smoke")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "results" / "conv_mixer" / "trials.parquet").set_index("mixer")
    assert sorted(df.index) == ["attention", "causal_conv"] and set(df["status"]) == {"done"}
    load_study_file(str(EXAMPLES / "conv_mixer.py"))  # registers causal_conv here too, to count it by hand
    from trainables.model import GPTConfig

    row = df.loc["causal_conv"]
    built = json.loads((tmp_path / "results" / "conv_mixer" / "trials" / row["trial"] / "config.json").read_text())
    cfg = GPTConfig.from_dict(built["model"])
    assert cfg.mixer == "causal_conv"
    assert row["params_total"] == sum(p.numel() for p in build_model(cfg).parameters()) == count_params(cfg)["total"]
    assert abs(row["params_total"] - 1.6e5) / 1.6e5 <= 0.05


@pytest.mark.ray
def test_the_search_study_runs_its_space(tmp_path, token_cache):
    """examples/lr_search.toml: an Optuna search of a user's own space, ASHA on, the smoke profile's 3 samples, each
    trial sized to the smoke budget; every drawn lr and warmup lies in the file's space."""
    proc = _run(tmp_path, token_cache, EXAMPLES / "lr_search.toml", "--profile", "smoke")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = tmp_path / "results" / "lr_search"
    df = pd.read_parquet(study / "trials.parquet")
    assert len(df) == 3 and (study / "optuna.db").exists()
    assert df["lr"].between(1e-4, 3e-2).all() and set(df["warmup_steps"]) <= {0, 10, 30}
    assert (abs(df["params_total"] - 1.6e5) / 1.6e5 <= 0.05).all()
