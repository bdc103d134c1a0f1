"""Everything a user can get wrong exits 2 with ONE line on stderr naming the problem and what is allowed,
no traceback, and nothing written under --output (checked before Ray starts). No Ray here."""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from study_cli import ROOT, run_cli

SMOKE = ["--profile", "smoke"]
NO_HEAD_SPLIT = ["--set", "budget=none", "--set", "n_embd=100", "--set", "n_head=3", "--set", "n_layer=2"]
FOUR_HEADS = ["--set", "budget=none", "--set", "n_embd=128", "--set", "n_head=4", "--set", "n_layer=2"]

# id -> (argv, words the one line must contain: what is wrong, and what is allowed where there is a list).
# These run as real CLI processes (exit status and stderr as a user sees them).
CASES = {
    "unknown_study": (["nanohead_gird"], ["nanohead_gird", "nanohead_grid", "scaling"]),
    "unknown_profile": (["nanohead_grid", "--profile", "huge"], ["huge", "smoke", "cpu", "gpu", "paper"]),
    "unknown_key": (["nanohead_grid", *SMOKE, "--set", "bogus=1"], ["bogus", "allowed", "nanohead_proportion"]),
    "proportion_above_range": (
        ["nanohead_grid", *SMOKE, "--set", "nanohead_proportion=1.2"],
        ["nanohead_proportion", "1.2", "[0, 1)"],
    ),
    "proportion_below_range": (
        ["nanohead_grid", *SMOKE, "--set", "nanohead_proportion=-0.1"],
        ["nanohead_proportion", "-0.1", "[0, 1)"],
    ),
    "nanohead_dim_zero": (["nanohead_grid", *SMOKE, "--set", "nanohead_dim=0"], ["nanohead_dim", ">= 1"]),
    "heads_do_not_divide": (["nanohead_grid", *SMOKE, *NO_HEAD_SPLIT], ["n_head=3", "divisor", "n_embd=100"]),
    "kv_heads_do_not_divide": (
        ["nanohead_grid", *SMOKE, *FOUR_HEADS, "--set", "n_kv_head=3"],
        ["n_kv_head=3", "divisor", "n_head=4"],
    ),
    "budget_unreachable": (["nanohead_grid", *SMOKE, "--set", "budget=10"], ["=10", "no architecture", "embeddings"]),
    "storage_not_a_url": (
        ["nanohead_search", *SMOKE, "--storage", "not-a-url"],
        ["--storage", "not-a-url", "sqlite:///"],
    ),
    "storage_unknown_kind": (
        ["nanohead_search", *SMOKE, "--storage", "nosuchdb://host/db"],
        ["--storage", "nosuchdb", "sqlite:///"],
    ),
    "storage_sqlite_folder_missing": (
        ["nanohead_search", *SMOKE, "--storage", "sqlite:////nonexistent/dir/optuna.db"],
        ["--storage", "/nonexistent/dir", "does not exist"],
    ),
    "address_nothing_listens": (
        ["nanohead_grid", *SMOKE, "--address", "127.0.0.1:1"],
        ["--address", "127.0.0.1:1", "cannot connect"],
    ),
    "resume_nothing": (["nanohead_grid", *SMOKE, "--resume"], ["--resume", "no run"]),
    "corpus_missing": (["nanohead_grid", *SMOKE, "--set", "corpus=/nonexistent.txt"], ["/nonexistent.txt"]),
    "cpus_per_worker_zero": (["nanohead_grid", *SMOKE, "--cpus-per-worker", "0"], ["--cpus-per-worker", "> 0"]),
    "more_workers_than_cpus": (
        ["nanohead_grid", *SMOKE, "--workers-per-trial", str((os.cpu_count() or 1) + 1)],
        ["CPUs", "this machine has"],
    ),
}
# More of the same, through study.run.main in this process (each CLI process costs seconds of torch import on
# a shared 2-core machine); Ray and data preparation are replaced by a failure so nothing can get past the checks.
IN_PROCESS = {
    "no_study": ([], ["no study", "--list"]),
    "set_without_value": (["nanohead_grid", *SMOKE, "--set", "lr"], ["KEY=VALUE"]),
    "value_of_wrong_type": (["nanohead_grid", *SMOKE, "--set", "lr=fast"], ["lr", "fast", "number"]),
    "int_key_given_a_float": (["nanohead_grid", *SMOKE, "--set", "n_layer=2.5"], ["n_layer", "integer"]),
    "proportion_axis_with_bad_value": (
        ["nanohead_grid", *SMOKE, "--set", "nanohead_proportion=0.2,1.0"],
        ["nanohead_proportion", "[0, 1)"],
    ),
    "nanohead_dim_zero_search": (["nanohead_search", *SMOKE, "--set", "nanohead_dim=0"], ["nanohead_dim", ">= 1"]),
    "kv_heads_do_not_divide_fixed_model": (["softmax1_ab", *SMOKE, "--set", "n_kv_head=3"], ["n_kv_head=3", "divisor"]),
    "budget_unreachable_vocab_depth": (["vocab_depth", *SMOKE, "--set", "budget=10"], ["=10", "no architecture"]),
    "budget_unreachable_search": (["nanohead_search", *SMOKE, "--set", "budget=10"], ["=10", "no architecture"]),
    "odd_head_dim": (["nanohead_grid", *SMOKE, "--set", "head_dim=33"], ["33", "even"]),
    "unknown_scaling_variant": (["scaling", *SMOKE, "--set", "scaling_variant=magic"], ["magic", "nanohead_p40"]),
    "unknown_tokenizer": (["nanohead_grid", *SMOKE, "--set", "tokenizer=bpe:1"], ["bpe:1", "257"]),
    "same_name_twice": (["nanohead_grid", *SMOKE, "--set", "nanohead_proportion=0.2,0.2"], ["nanohead_p20", "--seeds"]),
    "objective_unknown": (["nanohead_search", *SMOKE, "--set", "objective=both"], ["objective", "single", "multi"]),
    "seeds_zero": (["nanohead_grid", *SMOKE, "--seeds", "0"], ["--seeds", ">= 1"]),
    "seed_with_seeds_on_a_search": (
        ["nanohead_search", *SMOKE, "--seeds", "2", "--set", "seed=3"],
        ["--set seed=3", "--seeds 2"],
    ),
    "confirm_on_a_grid": (["nanohead_grid", *SMOKE, "--set", "confirm_top=1"], ["confirm_top", "grid study"]),
    "num_samples_zero": (["nanohead_search", *SMOKE, "--num-samples", "0"], ["--num-samples", ">= 1"]),
    # sequential seeding's options
    "seeds_a_word": (["softmax1_ab", *SMOKE, "--seeds", "many"], ["--seeds many", ">= 1", "auto"]),
    "seeds_auto_without_mde": (["softmax1_ab", *SMOKE, "--seeds", "auto"], ["--seeds auto needs --mde D"]),
    "seeds_auto_on_a_search": (
        ["nanohead_search", *SMOKE, "--seeds", "auto", "--mde", "0.01"],
        ["--seeds auto", "nanohead_search", "grid studies"],
    ),
    "seeds_auto_without_a_baseline": (
        ["vocab_depth", *SMOKE, "--seeds", "auto", "--mde", "0.01"],
        ["--seeds auto", "vocab_depth", "no baseline"],
    ),
    "max_seeds_without_auto": (["softmax1_ab", *SMOKE, "--max-seeds", "5"], ["--max-seeds 5", "--seeds auto"]),
    "max_seeds_below_three": (
        ["softmax1_ab", *SMOKE, "--seeds", "auto", "--mde", "0.01", "--max-seeds", "2"],
        ["--max-seeds 2", ">= 3"],
    ),
    "workers_zero": (["nanohead_grid", *SMOKE, "--workers-per-trial", "0"], ["--workers-per-trial", ">= 1"]),
    "storage_on_a_grid": (["nanohead_grid", *SMOKE, "--storage", "sqlite:///x.db"], ["--storage", "nanohead_search"]),
    # no postgres driver here, or nothing on port 1: either way one line, and the password never printed
    "storage_postgres_unusable": (
        ["nanohead_search", *SMOKE, "--storage", "postgresql://u:hunter2@127.0.0.1:1/db"],
        ["--storage", "u:***@127.0.0.1:1"],
    ),
    "address_ray_client_nothing_listens": (
        ["nanohead_grid", *SMOKE, "--address", "ray://127.0.0.1:1"],
        ["--address", "cannot connect"],
    ),
    "address_malformed": (["nanohead_grid", *SMOKE, "--address", "somewhere"], ["--address", "host:port", "auto"]),
    # the seed planner's options (study/seeds.py)
    "mde_zero": (["softmax1_ab", *SMOKE, "--dry-run", "--mde", "0"], ["--mde 0", "positive", "val_bpb"]),
    "mde_nan": (["softmax1_ab", *SMOKE, "--dry-run", "--mde", "nan"], ["--mde nan", "positive"]),
    "alpha_above_one": (["softmax1_ab", *SMOKE, "--mde", "0.01", "--alpha", "1.5"], ["--alpha 1.5", "(0, 1)"]),
    "power_of_one": (["softmax1_ab", *SMOKE, "--mde", "0.01", "--power", "1"], ["--power 1", "(0, 1)"]),
    "power_without_mde": (["softmax1_ab", *SMOKE, "--power", "0.9"], ["--power", "--mde"]),
    "pilot_without_mde": (["softmax1_ab", *SMOKE, "--pilot", "."], ["--pilot", "--mde"]),
    "pilot_missing": (
        ["softmax1_ab", *SMOKE, "--dry-run", "--mde", "0.01", "--pilot", "/nonexistent/pilot"],
        ["--pilot /nonexistent/pilot", "no such folder"],
    ),
    "mde_on_a_search": (["nanohead_search", *SMOKE, "--mde", "0.01"], ["--mde", "nanohead_search", "grid"]),
    "mde_without_a_baseline": (["vocab_depth", *SMOKE, "--mde", "0.01"], ["--mde", "vocab_depth", "no baseline"]),
    "mde_with_the_baseline_alone": (
        ["softmax1_ab", *SMOKE, "--mde", "0.01", "--set", "softmax1=false"],
        ["--mde", "no arm besides the baseline"],
    ),
    # the note's plan (100,000 steps x 64 x 256 tokens) over the 5 MB corpus: it would measure memorisation
    "paper_plan_loops_the_corpus": (
        ["softmax1_ab", "--profile", "paper", "--set", "corpus=wiki"],
        ["softmax1_ab_softmax", "1,638,400,000 tokens", "epochs of corpus 'wiki'", "max_epochs=4", "--set max_epochs="],
    ),
    "max_epochs_zero": (["nanohead_grid", *SMOKE, "--set", "max_epochs=0"], ["max_epochs=0", "> 0"]),
    # a dry run reads the corpus too (a folder without documents once passed it and failed every trial)
    "corpus_without_documents_dry_run": (
        ["nanohead_grid", *SMOKE, "--set", f"corpus={ROOT / 'docker'}", "--dry-run"],
        ["docker", "no .txt/.jsonl/.parquet"],
    ),
}
GPU_CASE = (["nanohead_grid", *SMOKE, "--gpus-per-trial", "1"], ["GPU", "this machine has 0"])


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def outcomes(token_cache, tmp_path_factory):
    """Every case, run as a real CLI process, three at a time: id -> (process, its --output dir)."""
    root = tmp_path_factory.mktemp("bad_input")
    cases = dict(CASES)
    if not _has_cuda():
        cases["gpu_on_a_cpu_machine"] = GPU_CASE

    def one(item):
        name, (argv, _) = item
        out = root / name
        return name, (run_cli(token_cache, *argv, "--output", out, timeout=180), out)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(one, cases.items()))


@pytest.mark.parametrize("case", [*CASES, "gpu_on_a_cpu_machine"])
def test_bad_input_exits_2_with_one_line(outcomes, case):
    if case not in outcomes:
        pytest.skip("this machine has a GPU: --gpus-per-trial 1 is not a mistake here")
    proc, out = outcomes[case]
    words = (CASES.get(case) or GPU_CASE)[1]
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists() or not any(out.iterdir()), sorted(map(str, out.rglob("*")))
    assert "Traceback" not in proc.stdout


def test_help_of_an_unknown_study_still_helps(capsys):
    import study.run

    with pytest.raises(SystemExit) as exit_:
        study.run.main(["bogus", "--help"])
    assert exit_.value.code == 0 and "--profile" in capsys.readouterr().out


def test_bad_input_leaves_an_existing_output_dir_untouched(capsys, tmp_path):
    import study.run

    (tmp_path / "keep.txt").write_text("mine")
    assert study.run.main(["nanohead_grid", *SMOKE, "--set", "nanohead_proportion=1.5", "--output", str(tmp_path)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("case", IN_PROCESS)
def test_bad_input_exits_2_with_one_line_in_process(case, capsys, monkeypatch, tmp_path):
    import study.run
    import study.service

    def got_past_the_checks(*args, **kwargs):
        raise AssertionError("a bad input got past validation")

    monkeypatch.setattr(study.service, "execute", got_past_the_checks)
    monkeypatch.setattr(study.run, "prepare_data", got_past_the_checks)
    argv, words = IN_PROCESS[case]
    out = tmp_path / "out"
    code = study.run.main([*argv, "--output", str(out)])
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists()
