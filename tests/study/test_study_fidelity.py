"""The "note vs this run" table of `study.run --dry-run` and study.json, checked against the research notes' own
numbers (shared/seeds/00N_*.txt, nanoGPT eba36e8, nanochat 98eed6d), written out here by hand."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from study_cli import run_cli

from search_spaces.fidelity import FidelityRow

LABELS = ("note:", "this run:", "differs:")
RUNS = [
    (study, "--profile", "paper")
    for study in ("softmax1_ab", "nanohead_grid", "nanohead_search", "toeplitz_flags", "vocab_depth", "scaling")
] + [("softmax1_ab", "--profile", "cpu"), ("softmax1_ab", "--profile", "paper", "--set", "max_steps=5000")]


@pytest.fixture(scope="module")
def dry_runs(token_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("fidelity_dry_runs")

    def one(i_run):
        i, run = i_run
        return run, run_cli(token_cache, *run, "--dry-run", "--output", out / f"run{i}", timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(pool.map(one, enumerate(RUNS)))
    for run, proc in done.items():
        assert proc.returncode == 0, (run, proc.stderr)
    return lambda *run: done[run].stdout


def note_vs_run(stdout: str) -> dict:
    """The printed table -> {aspect: {"note": ..., "this run": ..., "differs": ...}}; wrapped lines joined."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("note vs this run ("))
    rows, aspect, label, pad = {}, None, None, 0
    for line in lines[start + 1 :]:
        pad = line.find("note:") if aspect is None else pad
        head, field = line[:pad].strip(), line[pad : pad + 10].strip()
        if head:
            aspect = head
            rows[aspect] = {}
        if field in LABELS:
            label = field[:-1]
            rows[aspect][label] = line[pad + 10 :].strip()
        else:
            rows[aspect][label] += " " + line.strip()
    return rows


def test_softmax1_paper_names_each_difference_from_note_004(dry_runs):
    rows = note_vs_run(dry_runs("softmax1_ab", "--profile", "paper"))
    # the note: "increase max_iters to 100000", its table "max_iters 1000000"; 64 x 256 tokens a step
    assert "100,000" in rows["steps"]["note"] and "1,000,000" in rows["steps"]["note"]
    assert rows["steps"]["this run"] == f"100,000 steps, {100_000 * 64 * 256:,} tokens"
    assert "text" in rows["steps"]["differs"]
    assert (
        rows["batch"]["this run"] == f"64 x 256 tokens = {64 * 256:,} tokens per step"
        and rows["batch"]["differs"] == "no"
    )
    # gpt2 has 50,257 tokens; nanoGPT pads to 50,304: 47 rows of 768
    assert "50,257 tokens" in rows["vocab"]["this run"] and f"{47 * 768:,} parameters fewer" in rows["vocab"]["differs"]
    assert "6 layers x 768 wide, 6 heads of 128" in rows["model"]["this run"] and rows["model"]["differs"] == "no"
    assert "LayerNorm, learned positions, GELU, tied embeddings, bias=False" in rows["model"]["this run"]
    assert "(step+1)/100" in rows["schedule"]["differs"] and "it/100" in rows["schedule"]["differs"]
    assert "private" in rows["data"]["differs"] and "todayilearned" in rows["data"]["differs"]
    assert "last 10%" in rows["data"]["differs"]
    assert "200 random batches of train and of val" in rows["eval"]["note"]
    assert "fixed val windows" in rows["eval"]["differs"] and "1337" in rows["batches, seeds"]["note"]
    assert "tf32" in rows["precision"]["differs"] and "nccl" in rows["hardware"]["differs"]
    assert "2^loss" in rows["metric"]["note"] and "in bits" in rows["metric"]["differs"]
    assert "matrices lr 0.001, tied table 0.001, positions 0.001; betas (0.9, 0.99)" in rows["optimizer"]["this run"]
    assert rows["optimizer"]["differs"] == "no"


def test_a_profile_or_set_that_changes_a_row_says_so(dry_runs):
    cpu = note_vs_run(dry_runs("softmax1_ab", "--profile", "cpu"))
    assert cpu["steps"]["this run"] == f"300 steps, {300 * 16 * 128:,} tokens"
    assert (
        cpu["steps"]["differs"]
        == f"changed by --profile cpu; the paper profile runs: 100,000 steps, {100_000 * 64 * 256:,} tokens"
    )
    assert (
        cpu["softmax1"]["differs"] == "the note does not show its change"
    )  # not changed by the profile: its own reason
    paper = note_vs_run(dry_runs("softmax1_ab", "--profile", "paper", "--set", "max_steps=5000"))
    assert paper["steps"]["this run"] == f"5,000 steps, {5000 * 64 * 256:,} tokens"
    assert paper["steps"]["differs"].startswith(
        "changed by --set max_steps=5000; the paper profile runs: 100,000 steps"
    )
    assert paper["batch"]["differs"] == "no"


def test_nanohead_paper_is_base_train(dry_runs):
    rows = note_vs_run(dry_runs("nanohead_grid", "--profile", "paper"))
    # base_train: 32 x 2048 a micro-step, 524,288 tokens a step (8 micro-steps on one GPU), --num-iterations=500
    assert rows["batch"]["this run"] == "32 x 2048 tokens x 8 micro-steps = 524,288 tokens per step"
    assert rows["steps"]["this run"] == f"500 steps, {500 * 524_288:,} tokens" and rows["steps"]["differs"] == "no"
    # d7: 7 x 64 = 448, rounded up to 128-wide heads: 512; AdamW lrs x (512/768)^-0.5; Muon decay 0.2 x (12/7)^2
    assert rows["model size"]["this run"].startswith("d7, 512 wide, 4 heads of 128")
    scale = (512 / 768) ** -0.5
    assert f"embedding {0.3 * scale:.4g}, lm_head {0.004 * scale:.4g}" in rows["optimizer"]["this run"]
    assert f"weight decay {0.2 * (12 / 7) ** 2:.4g} falling linearly to 0" in rows["optimizer"]["this run"]
    assert "NorMuon" in rows["optimizer"]["differs"]
    # p=0.2 at 512: 32 heads of 3 (96) leave 416 = 4 x 104; share 96/512
    assert f"p=0.2: 32 x 3 + 4 x 104 (share {96 / 512:.4f})" in rows["nano heads"]["this run"]
    assert "value embeddings" in rows["architecture"]["differs"] or "January 2026" in rows["architecture"]["differs"]
    assert "last shard" in rows["data"]["differs"] and "1,000,000" in rows["data"]["differs"]
    assert "CORE" in rows["eval"]["differs"]
    search = note_vs_run(dry_runs("nanohead_search", "--profile", "paper"))
    assert "Optuna" in search["search"]["this run"] and "extension" in search["search"]["differs"]


def test_toeplitz_paper_names_note_003s_differences(dry_runs):
    rows = note_vs_run(dry_runs("toeplitz_flags", "--profile", "paper"))
    assert rows["steps"]["this run"] == f"20,000 steps, {20_000 * 16 * 512:,} tokens"
    assert "~50k" in rows["tokenizer"]["note"] and "65,536 tokens" in rows["tokenizer"]["this run"]
    assert "2,115,696" in rows["data"]["note"] and "test split" in rows["data"]["differs"]
    assert "packed" in rows["batch"]["differs"] and "padded" in rows["batch"]["note"]
    assert "fp16" in rows["precision"]["note"] and "bf16" in rows["precision"]["this run"]
    assert "betas (0.9, 0.999)" in rows["optimizer"]["this run"] and rows["optimizer"]["differs"] == "no"
    assert "step/500" in rows["schedule"]["differs"]
    assert "best" in rows["eval"]["note"] and "best val loss" in rows["eval"]["this run"]
    assert "cached vs uncached" in rows["generation"]["this run"]
    assert rows["mixer"]["this run"].startswith("filters linear, init normal, projection bias True")


def test_vocab_depth_and_scaling(dry_runs):
    rows = note_vs_run(dry_runs("vocab_depth", "--profile", "paper"))
    # 20 tokens per parameter of 38M at 524,288 a step: ceil(760M / 524,288) = 1,450 steps
    assert rows["tokens"]["this run"] == f"1,450 steps, {1450 * 524_288:,} tokens"
    assert "754M" in rows["tokens"]["note"]
    assert "last shard" in rows["data"]["differs"]
    out = dry_runs("scaling", "--profile", "paper")
    assert [line for line in out.splitlines() if line.startswith("note vs this run")] == [
        next(line for line in out.splitlines() if line.startswith("note vs this run: scaling has no single note"))
    ]


def test_fidelity_row_is_checked():
    with pytest.raises(ValueError, match="FidelityRow.aspect=''"):
        FidelityRow("", "the note", "this run")
    with pytest.raises(ValueError, match="FidelityRow.reason=None"):
        FidelityRow("steps", "the note", "this run", None)


def test_study_json_records_the_table(tmp_path):
    from study.catalog import get_study
    from study.run import RunOptions, make_plan
    from study.service import write_study_json

    plan = make_plan(get_study("toeplitz_flags"), RunOptions(profile="paper"))
    write_study_json(plan, tmp_path, "2026-01-01T00:00:00", None, False)
    saved = json.loads((tmp_path / "study.json").read_text())["fidelity"]
    assert saved["note"] == "003_dda6ec3c2e766f7d.txt"
    steps = next(r for r in saved["rows"] if r["aspect"] == "steps")
    assert steps == {
        "aspect": "steps",
        "note": "max_steps 20,000",
        "this_run": f"20,000 steps, {20_000 * 16 * 512:,} tokens",
        "reason": "",
    }
