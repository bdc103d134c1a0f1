"""The seed planner end to end: `python -m study.run STUDY --dry-run --mde D` over pilot folders written here by hand
(a trials.parquet and a study.json whose noise we chose), its `seeds needed:` line checked against the textbook
sample size and the pilot's sd computed by hand. No Ray."""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from study_cli import SMOKE, parse_table, run_cli

import study.run

SMOKE_ARGS = ["--profile", "smoke", "--dry-run"]
TOKENS = SMOKE["max_steps"] * SMOKE["batch_size"] * SMOKE["seq_len"]  # a smoke trial: 30 x 8 x 64


def textbook_n(effect: float, alpha: float, power: float, paired: bool) -> int:
    """The normal approximation with Guenther's t correction (see tests/reports/test_reports_power.py)."""
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    n = ((za + zb) / effect) ** 2 + za**2 / 2 if paired else 2 * ((za + zb) / effect) ** 2 + za**2 / 4
    return max(2, math.ceil(n))


def write_pilot(folder, study, arms, seeds, *, sd_seed=0.03, sd_noise=0.004, shared=True, flops=1e6, rng=0):
    """An earlier run of `study` as study.run leaves it (the columns the planner reads): each arm's val_bpb = 2 + the
    seed's own effect, shared by the arms that ran the same seed, + the trial's own noise; 30 s a trial."""
    rng = np.random.default_rng(rng)
    effect = rng.normal(0, sd_seed, 2 * seeds)
    rows = []
    for i, arm in enumerate(arms):
        for s in range(seeds):
            seed = s if shared else s + i * seeds
            rows.append(
                dict(
                    trial=f"{study}_{arm}_s{seed}",
                    study=study,
                    variant=arm,
                    seed=seed,
                    status="done",
                    val_bpb=2.0 + effect[seed] + rng.normal(0, sd_noise),
                    wall_s=30.0,
                    tokens_trained=TOKENS,
                    flops_per_token=flops,
                )
            )
    folder.mkdir(parents=True)
    trials = pd.DataFrame(rows)
    trials.to_parquet(folder / "trials.parquet")
    meta = dict(study=study, profile="smoke", metric="val_bpb", mode="min", baseline={"variant": arms[0]})
    (folder / "study.json").write_text(json.dumps(meta))
    return trials


def paired_sd(trials, arm, baseline) -> float:
    by_seed = trials.pivot(index="seed", columns="variant", values="val_bpb")
    return float(np.std((by_seed[arm] - by_seed[baseline]).to_numpy(), ddof=1))


def planner_line(stdout: str) -> str:
    lines = [l for l in stdout.splitlines() if l.startswith("seeds needed:")]
    assert len(lines) == 1, stdout
    return lines[0]


def seeds_in(line: str) -> int:
    return int(re.match(r"seeds needed: (\d+) per arm", line).group(1))


def test_the_cli_line_on_a_paired_pilot(token_cache, tmp_path):
    """softmax1_ab at the smoke profile, D = 0.01 bpb, a pilot of 6 paired seeds: the seeds per arm are the textbook
    number for the sd of the per-seed differences (alpha 0.05 / 1 comparison), and the compute is those trials x
    the planned tokens x FLOPs per token, with a wall time at the pilot's 30 s a trial."""
    pilot = write_pilot(tmp_path / "pilot", "softmax1_ab", ["softmax", "softmax1"], 6)
    out = tmp_path / "out"
    proc = run_cli(
        token_cache, "softmax1_ab", *SMOKE_ARGS, "--mde", "0.01", "--pilot", tmp_path / "pilot", "--output", out
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    table = parse_table(proc.stdout)
    lines = proc.stdout.splitlines()
    line = planner_line(proc.stdout)
    assert lines.index(line) > lines.index(next(l for l in lines if l.startswith("axes:")))  # after the trial table
    sd = paired_sd(pilot, "softmax1", "softmax")
    n = seeds_in(line)
    expected = textbook_n(0.01 / sd, 0.05, 0.8, paired=True)
    assert expected <= n <= expected + 1, (n, expected, line)
    assert f"sd {sd:.3g} of the per-seed differences softmax1 - softmax (6 pairs)" in line
    assert "paired t-test at alpha 0.05/1 = 0.05 (Holm's first step over 1 comparison)" in line
    assert "80% power" in line and "(this plan: 1)" in line
    # compute: every trial of the table costs tokens x FLOPs per token, and there are n of each arm
    fpt = float(re.search(r"x ([\d.e+]+) FLOPs/token", line).group(1))
    assert f"{2 * n} trials ({n} x 2 arms) x {TOKENS:,} tokens" in line
    assert all(t["tokens"] == TOKENS and t["FLOPs"] == pytest.approx(TOKENS * fpt, rel=5e-3) for t in table)
    total = float(re.search(r"= ([\d.e+]+) FLOPs", line).group(1))
    assert total == pytest.approx(n * sum(t["FLOPs"] for t in table), rel=5e-3)
    # wall time: the pilot's pace (30 s for TOKENS x 1e6 FLOPs) over this plan's FLOPs, K trials at once
    at_once = int(re.search(r"(\d+) at once here", line).group(1))
    seconds = 30 * total / (TOKENS * 1e6) / at_once
    amount, unit = re.search(r"about ([\d.]+) (s|min|h)", line).groups()
    assert float(amount) * {"s": 1, "min": 60, "h": 3600}[unit] == pytest.approx(seconds, rel=0.05, abs=30)
    assert "the pilot's 12 trials: 30 s each" in line
    assert not out.exists()  # a dry run writes nothing


def test_the_default_pilot_is_the_studys_own_results_folder(capsys, tmp_path):
    """Without --pilot the noise comes from OUTPUT/STUDY: unpaired there (the arms ran other seeds), so the pooled
    within-arm sd and the two-sample number."""
    pilot = write_pilot(tmp_path / "softmax1_ab", "softmax1_ab", ["softmax", "softmax1"], 5, shared=False)
    assert study.run.main(["softmax1_ab", *SMOKE_ARGS, "--mde", "0.02", "--output", str(tmp_path)]) == 0
    line = planner_line(capsys.readouterr().out)
    pooled = math.sqrt(pilot.groupby("variant")["val_bpb"].var(ddof=1).mean())  # equal groups: the mean variance
    n = seeds_in(line)
    expected = textbook_n(0.02 / pooled, 0.05, 0.8, paired=False)
    assert expected <= n <= expected + 1, (n, expected, line)
    assert f"pooled seed-to-seed sd {pooled:.3g}" in line and "two-sample t-test" in line
    assert str(tmp_path / "softmax1_ab") in line


def test_holm_first_step_over_the_comparisons(capsys, tmp_path):
    """nanohead_grid has five arms, four compared with p00: each comparison at 0.05 / 4, with 90% power asked."""
    arms = ["p00", "p20", "p40", "p60", "p80"]
    pilot = write_pilot(tmp_path / "pilot", "nanohead_grid", arms, 4)
    argv = ["nanohead_grid", *SMOKE_ARGS, "--mde", "0.01", "--power", "0.9", "--pilot", str(tmp_path / "pilot")]
    assert study.run.main([*argv, "--output", str(tmp_path / "out")]) == 0
    line = planner_line(capsys.readouterr().out)
    sd, arm = max((paired_sd(pilot, a, "p00"), a) for a in arms[1:])  # the noisiest comparison sets the seeds
    n = seeds_in(line)
    expected = textbook_n(0.01 / sd, 0.05 / 4, 0.9, paired=True)
    assert expected <= n <= expected + 1, (n, expected, line)
    assert "alpha 0.05/4 = 0.0125 (Holm's first step over 4 comparisons)" in line and "90% power" in line
    assert f"differences {arm} - p00 (4 pairs)" in line and f"{5 * n} trials ({n} x 5 arms)" in line


@pytest.mark.parametrize("seeds", [0, 1], ids=["no_pilot", "one_seed_an_arm"])
def test_without_a_usable_pilot_one_line_says_how_to_get_one(capsys, tmp_path, seeds):
    if seeds:
        write_pilot(tmp_path / "softmax1_ab", "softmax1_ab", ["softmax", "softmax1"], seeds)
    before = sorted(tmp_path.rglob("*"))
    assert study.run.main(["softmax1_ab", *SMOKE_ARGS, "--mde", "0.01", "--output", str(tmp_path)]) == 0
    line = planner_line(capsys.readouterr().out)
    assert line.startswith("seeds needed: unknown, no pilot")
    assert "python -m study.run softmax1_ab --profile smoke --seeds 2" in line and "--pilot DIR" in line
    if seeds:
        assert "arm softmax has 1 finished seed" in line
    assert sorted(tmp_path.rglob("*")) == before


def test_a_pilot_of_another_study_is_refused(capsys, tmp_path):
    write_pilot(tmp_path / "pilot", "nanohead_grid", ["p00", "p20"], 3)
    argv = ["softmax1_ab", *SMOKE_ARGS, "--mde", "0.01", "--pilot", str(tmp_path / "pilot")]
    assert study.run.main([*argv, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pilot" in err[0] and "'nanohead_grid', not softmax1_ab" in err[0], err
