"""Every command the README tells a user to type is run by a test as written (with `--profile smoke` added
where a profile applies, in a fresh working folder), or this file says why it is not. A README command that
is neither fails the first test, so the README and the tests cannot drift apart."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "study"))
from study_cli import cli_env  # noqa: E402

# command -> the test that runs it (path::name), or why none does
COVERED = {
    "bash setup.sh": ".ci/run runs it on a fresh clone before the tests",
    "python -m pytest -q": ".ci/run runs it",
    'python -m pytest -m "not ray"': "a subset of the suite .ci/run runs",
    "python -m study.run nanohead_grid": "tests/study/test_user_path.py::test_the_quickstart_exits_0_with_the_report_in_results",
    "python -m study.run --list": "tests/test_readme.py::test_cheap_commands_run_as_written",
    "python -m study.run softmax1_ab --help": "tests/test_readme.py::test_cheap_commands_run_as_written",
    "python -m study.run nanohead_grid --dry-run": "tests/test_readme.py::test_cheap_commands_run_as_written",
    "python -m study.run softmax1_ab --dry-run --mde 0.01": "tests/test_readme.py::test_cheap_commands_run_as_written",
    "python -m study.run softmax1_ab --seeds 3": "tests/test_readme.py::test_study_commands_run_at_the_smoke_profile",
    "python -m study.run nanohead_grid --seeds 3": "the cpu pilot behind the planner line (20 min here); --seeds N at "
    "the smoke profile: tests/test_readme.py::test_study_commands_run_at_the_smoke_profile",
    "python -m study.run softmax1_ab --seeds auto --mde 0.01": "rounds of data-dependent length (minutes); the rule "
    "end to end, through a crash: tests/study/test_study_sequential_ray.py::"
    "test_sequential_seeding_stops_a_large_effect_and_seeds_a_null_arm_through_a_crash",
    "python -m study.run nanohead_grid --seeds auto --mde 0.01 --max-seeds 6": "as the line above: "
    "tests/study/test_study_sequential_ray.py::"
    "test_sequential_seeding_stops_a_large_effect_and_seeds_a_null_arm_through_a_crash",
    "python -m study.run nanohead_grid --set nanohead_dim=2 --set nanohead_proportion=0,0.3,0.6": "tests/test_readme.py::test_study_commands_run_at_the_smoke_profile",
    "python -m study.run scaling --set match=flops --dry-run": "tests/test_readme.py::test_cheap_commands_run_as_written",
    "python -m study.run scaling --set match=flops": "18 trials: ~160 s at the smoke profile here, past a Ray test's "
    "budget; its plan: tests/study/test_study_flops_plan.py::test_dry_run_shows_n_d_c_and_tokens_per_param, its report: "
    "tests/reports/test_reports_scaling_fit.py::test_report_shows_fits_held_out_and_crossover_escaped",
    "python -m study.run vocab_depth --profile gpu --workers-per-trial 2": "needs 2 GPUs per trial (this machine has none); its plan is checked by "
    "tests/test_readme.py::test_cheap_commands_run_as_written with --dry-run",
    "python -m study.run STUDY": "the form of the commands above, not a command",
    "python -m study.run qknorm_ab.toml --profile smoke": "tests/study/test_study_files.py::test_the_toml_study_runs_resumes_by_name_and_reports",
    "python -m study.run qknorm_ab --profile smoke --resume": "tests/study/test_study_files.py::test_the_toml_study_runs_resumes_by_name_and_reports",
    "python -m study.run examples/conv_mixer.py --profile smoke": "tests/study/test_study_files.py::test_the_python_study_registers_its_mixer_and_trains_it",
    "python -m study.run examples/lr_search.toml --profile smoke": "tests/study/test_study_files.py::test_the_search_study_runs_its_space",
    "python -m reports.serve results": "tests/reports/test_reports_serve.py::test_index_lists_studies_escaped_with_links",
    "python -m reports.compare cpu/softmax1_ab gpu/softmax1_ab": "tests/reports/test_reports_compare.py::test_the_readme_command",
    "python -m reports.serve s3://my-bucket/studies": "needs a bucket; the same on a local S3-compatible server: "
    "tests/reports/test_reports_live.py::test_live_view_of_a_study_in_a_bucket",
    "python -m study.run nanohead_search --resume --num-samples 20": "tests/study/test_study_ray.py::test_optuna_search_extended_with_more_trials",
    "python -m study.run nanohead_search --profile smoke --num-samples 2 --seeds 2 --set confirm_top=1 --set confirm_seeds=2": "tests/study/test_search_seeds.py::test_a_search_with_two_seeds_reports_means_and_confirms_its_best_config",
    "wandb sync results/STUDY/wandb/offline-run-*": "uploads to wandb.ai: needs an account and the network",
    "python -m study.run nanohead_grid --address auto --profile gpu": "needs a GPU; --address auto on a head: tests/study/test_submit.py::test_address_auto_joins_the_head",
    "python -m study.run nanohead_grid --address auto": "tests/study/test_submit.py::test_address_auto_joins_the_head",
    "python -m study.submit nanohead_grid --address http://127.0.0.1:8265 --profile gpu --output "
    "s3://my-bucket/studies --follow": "needs a GPU cluster and a bucket; the same at the smoke profile: "
    "tests/study/test_submit.py::test_submit_follow_status_fetch",
    "python -m study.submit --status JOB_ID": "tests/study/test_submit.py::test_submit_follow_status_fetch",
    "python -m study.submit --fetch JOB_ID --dest results/": "tests/study/test_submit.py::test_submit_follow_status_fetch",
    "python -m study.submit STUDY --fetch --output s3://my-bucket/studies": "tests/study/test_study_s3.py::test_fetch_brings_the_study_back_for_the_report",
    "ray up docker/cluster.yaml": "starts machines on AWS",
    "ray dashboard docker/cluster.yaml": "tunnels to a cluster started on AWS",
    "ray start --head --resources '{\"train_driver\": K}'": "tests/study/test_submit.py::test_submit_follow_status_fetch "
    "(its head fixture)",
    "python benchmarks/bench_model.py": "a benchmark (minutes); its numbers are in the README",
    "python benchmarks/bench_model.py --models gpt --modes eager,compile,compile-fp32 --repeats 21 --steps 2": "a benchmark (minutes); its numbers are in the README",
    "python benchmarks/bench_data.py": "a benchmark; its numbers are in the README",
    "python benchmarks/bench_service.py --max-steps 400": "a benchmark (minutes); its numbers are in the README",
    "python benchmarks/bench_ddp.py": "a benchmark; its numbers are in the README",
    "python benchmarks/bench_paper_step.py": "a benchmark (minutes); its numbers are in the README, and "
    "tests/test_paper_shapes.py checks the shapes it steps",
}
COMMAND_START = re.compile(r"^(python |bash |ray |wandb )")


def readme_commands() -> set[str]:
    text = (ROOT / "README.md").read_text()
    found = set()
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            for part in re.split(r"\s+(?:&&|;)\s+", line):
                if COMMAND_START.match(part):
                    found.add(" ".join(part.split()))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        for part in re.split(r"\s+(?:&&|;)\s+", span):
            if COMMAND_START.match(part) and " " in part:
                found.add(part)
    return found


def test_every_readme_command_is_run_by_a_test_or_says_why():
    commands = readme_commands()
    assert commands - set(COVERED) == set(), "README commands with no test and no reason"
    assert set(COVERED) - commands == set(), "entries here for commands the README no longer has"
    for reason in COVERED.values():
        for ref in re.findall(r"(tests/\S+\.py)::(\w+)", reason):
            assert f"def {ref[1]}(" in (ROOT / ref[0]).read_text(), f"{ref[0]}::{ref[1]} does not exist"


@pytest.mark.parametrize(
    "command",
    [
        "python -m study.run --list",
        "python -m study.run softmax1_ab --help",
        "python -m study.run nanohead_grid --dry-run",
        "python -m study.run softmax1_ab --dry-run --mde 0.01",
        "python -m study.run vocab_depth --profile gpu --workers-per-trial 2 --dry-run",
        "python -m study.run scaling --set match=flops --dry-run",
    ],
)
def test_cheap_commands_run_as_written(command, token_cache, tmp_path):
    proc = subprocess.run(
        [sys.executable, *command.split()[1:]],
        cwd=tmp_path,
        env=cli_env(token_cache),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout.strip()
    assert not (tmp_path / "results").exists()


@pytest.mark.ray
@pytest.mark.parametrize(
    "command, trials",
    [
        ("python -m study.run softmax1_ab --seeds 3", 6),
        ("python -m study.run nanohead_grid --set nanohead_dim=2 --set nanohead_proportion=0,0.3,0.6", 3),
    ],
)
def test_study_commands_run_at_the_smoke_profile(command, trials, token_cache, tmp_path):
    args = [*command.split()[1:], "--profile", "smoke"]
    proc = subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=cli_env(token_cache), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = tmp_path / "results" / command.split()[3]
    rows = pd.read_parquet(study / "trials.parquet")
    assert len(rows) == trials and set(rows["status"]) == {"done"}
    assert (study / "report.html").exists()
