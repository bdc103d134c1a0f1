"""scaling --set match=flops: the isoFLOP plan as a user sees it (CLI processes, no Ray). Every trial's D x N x 6
is its budget C to within one step, checked against parameters and tokens worked out by hand here."""

import math

import pytest
from study_cli import SMOKE, hand_params, parse_table, run_cli

# The smoke profile's compute-matched design, written out here (the reference): budgets C and tokens per parameter
COMPUTE = [1e10, 2e10, 4e10]
RATIOS = [0.05, 0.2, 0.8]
VOCAB = 512  # bpe:512, the smoke profile's tokenizer


@pytest.fixture(scope="module")
def table(token_cache):
    proc = run_cli(token_cache, "scaling", "--profile", "smoke", "--set", "match=flops", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, parse_table(proc.stdout)


def test_dry_run_shows_n_d_c_and_tokens_per_param(table):
    stdout, rows = table
    assert len(rows) == len(COMPUTE) * len(RATIOS) * 2
    assert {"params", "tokens", "FLOPs", "C=6ND", "D/N"} <= set(rows[0])
    assert "C = 6 N D" in stdout and "flops_per_token" in stdout  # which compute the table's two columns are
    per_step = SMOKE["batch_size"] * SMOKE["seq_len"]
    seen = set()
    for r in rows:
        C = float(r["trial"].split("_C")[1].split("_r")[0])
        ratio = float(r["trial"].split("_r")[1])
        seen.add((C, ratio))
        N, D = r["params"], r["tokens"]
        assert D % per_step == 0  # whole steps
        assert abs(6 * N * D - C) <= 6 * N * per_step / 2  # rounded to the nearest step
        assert r["C=6ND"] == pytest.approx(6 * N * D, rel=5e-3)  # printed to 3 significant digits
        assert r["D/N"] == pytest.approx(D / N, abs=0.05)
    assert seen == {(c, r) for c in COMPUTE for r in RATIOS}


def test_one_trial_by_hand(table):
    """C = 1e10 at 0.8 tokens per parameter: N = sqrt(1e10 / 4.8) = 45,644 targets 1 layer of width 32 (the only
    size within 15%); its parameters by hand, D = C / 6N in whole 512-token steps."""
    _, rows = table
    row = next(r for r in rows if r["trial"] == "scaling_baseline_C1e+10_r0.8")
    N = hand_params(VOCAB, 32, 1)["total"]
    assert N == 2 * 512 * 32 + 12 * 32 * 32 == 45_056
    steps = round(1e10 / (6 * N) / 512)  # 36,990.6 tokens = 72.25 steps
    assert steps == 72
    assert (row["L"], row["width"], row["params"], row["tokens"]) == (1, 32, N, steps * 512)
    assert row["C=6ND"] == pytest.approx(6 * 45_056 * 36_864, rel=5e-3)  # 9.97e9
    assert row["D/N"] == pytest.approx(36_864 / 45_056, abs=0.05)


def test_params_match_is_todays_table(token_cache):
    proc = run_cli(token_cache, "scaling", "--profile", "smoke", "--set", "match=params", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = parse_table(proc.stdout)
    assert "C=6ND" not in rows[0] and len(rows) == 8  # 4 parameter budgets x 2 arms


@pytest.mark.parametrize(
    "args, words",
    [
        (["--set", "match=flop"], "match='flop': must be one of params, flops"),
        (["--set", "compute=1e10"], "compute=10000000000.0: applies to match=flops only"),
        (["--set", "match=flops", "--set", "budget=1e5"], "budget=100000.0: match=flops sizes each trial"),
        (["--set", "match=flops", "--set", "max_steps=50"], "derives max_steps from compute"),
        (["--set", "match=flops", "--set", "tokens_per_param=0"], "tokens_per_param=0: must be a number > 0"),
    ],
)
def test_bad_match_input_exits_2_with_one_line(token_cache, args, words):
    proc = run_cli(token_cache, "scaling", "--profile", "smoke", "--dry-run", *args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_compute_override_takes_effect(token_cache):
    proc = run_cli(
        token_cache, "scaling", "--profile", "smoke", "--set", "match=flops", "--set", "compute=3e10", "--dry-run"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = parse_table(proc.stdout)
    assert len(rows) == len(RATIOS) * 2
    for r in rows:
        assert abs(6 * r["params"] * r["tokens"] - 3e10) <= 6 * r["params"] * 512 / 2
        assert math.isclose(float(r["trial"].split("_C")[1].split("_r")[0]), 3e10)
