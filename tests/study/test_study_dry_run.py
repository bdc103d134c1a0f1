"""`python -m study.run --list / --help / --dry-run` as a user runs them (subprocesses, no Ray).

The tables are checked against references computed here: parameter counts from real torch modules and
nanochat's hand formula, tokens and FLOPs from the profile's numbers, names from the naming rule."""

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from study_cli import CPU, SMOKE, STUDY_NAMES, hand_params, numel, parse_table, run_cli

PROFILES = {"smoke": SMOKE, "cpu": CPU}
GRID_STUDIES = [s for s in STUDY_NAMES if s != "nanohead_search"]


# Every dry run the tests below read, run once each as a CLI process (three at a time: each costs seconds
# of imports on a small shared machine).
RUNS = [(study, profile) for study in STUDY_NAMES for profile in ("smoke", "cpu")] + [
    ("nanohead_search", "smoke", "--set", "objective=multi", "--num-samples", "3"),
    ("nanohead_grid", "smoke", "--seeds", "3"),
    ("nanohead_grid", "smoke", "--set", "nanohead_dim=2"),
    ("nanohead_grid", "smoke", "--set", "nanohead_proportion=0.1,0.3"),
    (
        "nanohead_grid",
        "smoke",
        "--set",
        "budget=none",
        "--set",
        "n_embd=96",
        "--set",
        "n_head=3",
        "--set",
        "n_layer=3",
        "--set",
        "nanohead_proportion=0.4",
    ),
]


@pytest.fixture(scope="module")
def dry_run_outputs(tmp_path_factory):
    return tmp_path_factory.mktemp("dry_run_output")


@pytest.fixture(scope="module")
def dry_runs(token_cache, dry_run_outputs):
    """key -> the finished process; each run gets its own --output dir (a dry run must not create it)."""

    def one(i_key):
        i, (study, profile, *extra) = i_key
        return (study, profile, *extra), run_cli(
            token_cache, study, "--profile", profile, "--dry-run", *extra, "--output", dry_run_outputs / f"run{i}"
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        done = dict(pool.map(one, enumerate(RUNS)))

    def get(study, profile, *extra):
        return done[(study, profile, *extra)]

    return get


def table(proc):
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    return parse_table(proc.stdout)


# ----------------------------------------------------------------------------- --list and --help


def test_list_names_the_six_studies_with_their_hypotheses(token_cache):
    proc = run_cli(token_cache, "--list")
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    assert [l.split()[0] for l in lines] == STUDY_NAMES
    assert all(len(l.split()) > 5 for l in lines)  # each with its hypothesis


def test_help_for_a_study_states_its_hypothesis(token_cache):
    from study.catalog import STUDIES

    proc = run_cli(token_cache, "nanohead_grid", "--help")
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.split())
    assert " ".join(STUDIES["nanohead_grid"].hypothesis.split()) in flat
    assert "nanohead_proportion=[0.0, 0.2, 0.4, 0.6, 0.8]" in flat  # the axes
    for option in (
        "--profile",
        "--dry-run",
        "--seeds",
        "--num-samples",
        "--set",
        "--output",
        "--resume",
        "--address",
        "--workers-per-trial",
        "--gpus-per-trial",
        "--wandb",
        "--storage",
    ):
        assert option in proc.stdout


@pytest.mark.parametrize("name", [s for s in STUDY_NAMES if s != "nanohead_grid"])
def test_help_of_every_study_states_its_hypothesis(name, capsys):
    """The same for the other five, through study.run.main here (one CLI process above is enough)."""
    from study.catalog import STUDIES
    from study.run import main

    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert " ".join(STUDIES[name].hypothesis.split()) in flat and "--profile" in flat


# ----------------------------------------------------------------------------- every grid study's table


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
@pytest.mark.parametrize("study", GRID_STUDIES)
def test_dry_run_table_is_consistent_arithmetic(dry_runs, study, profile):
    """Every row: params = embedding + lm_head + blocks, embedding = vocab x width (softmax1_ab, nanoGPT's model:
    + its position table, seq x width), tokens = the profile's steps x batch x seq, FLOPs = tokens x (6 x matmul
    params + the mixing term), names unique."""
    rows = table(dry_runs(study, profile))
    assert rows
    p = PROFILES[profile]
    assert len({r["trial"] for r in rows}) == len(rows)
    for r in rows:
        assert r["params"] == r["embed"] + r["lm_head"] + r["blocks"], r
        positions = p["seq_len"] * r["width"] if study == "softmax1_ab" else 0
        assert r["embed"] == r["vocab"] * r["width"] + positions, r
        assert r["lm_head"] in (0, r["vocab"] * r["width"]), r
        assert r["tokens"] == p["max_steps"] * p["batch_size"] * p["seq_len"], r
        matmul = (
            r["params"] - r["embed"] + r["vocab"] * r["width"] * (r["lm_head"] == 0)
        )  # a tied head still multiplies
        if study == "toeplitz_flags":  # filters are not matmuls: one multiply-add per channel and lag
            fpt = 6 * (matmul - r["L"] * r["heads"] * p["seq_len"]) + 6 * r["L"] * r["width"] * p["seq_len"]
        else:  # QK^T and AV over the full window
            fpt = 6 * matmul + 12 * r["L"] * r["width"] * p["seq_len"]
        assert r["FLOPs"] == pytest.approx(fpt * r["tokens"], rel=6e-3), r  # printed with 3 significant digits


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_nanohead_grid_is_five_proportions_param_matched(dry_runs, profile):
    rows = table(dry_runs("nanohead_grid", profile))
    depth = rows[0]["L"]
    assert [r["trial"] for r in rows] == [f"nanohead_p{pct:02d}_d{depth}" for pct in (0, 20, 40, 60, 80)]
    assert [r["variant"] for r in rows] == ["p00", "p20", "p40", "p60", "p80"]
    assert (
        len({(r["params"], r["embed"], r["lm_head"], r["blocks"], r["L"], r["width"], r["heads"]) for r in rows}) == 1
    )
    assert rows[0]["nano"] == "-" and all(r["nano"].endswith("x3") for r in rows[1:])  # nanohead_dim 3
    budget = {"smoke": 1.6e5, "cpu": 2.0e6}[profile]
    assert abs(rows[0]["params"] / budget - 1) <= 0.05  # the solver's tolerance around the profile's budget
    if profile == "smoke":
        assert depth == SMOKE["depth"]


def test_nanohead_grid_params_equal_real_modules(dry_runs):
    """The printed numbers against nanochat's hand count and against a GPT built here from the row's dims."""
    rows = table(dry_runs("nanohead_grid", "smoke"))
    for r, p in zip(rows, (0.0, 0.2, 0.4, 0.6, 0.8)):
        hand = hand_params(r["vocab"], r["width"], r["L"])
        assert (r["params"], r["embed"], r["lm_head"], r["blocks"]) == (
            hand["total"],
            hand["embedding"],
            hand["lm_head"],
            hand["blocks"],
        )
        real = numel(
            vocab_size=r["vocab"],
            n_layer=r["L"],
            n_embd=r["width"],
            n_head=r["heads"],
            seq_len=SMOKE["seq_len"],
            nanohead_proportion=p,
            nanohead_dim=3,
        )
        assert real["total"] == r["params"], r
    assert rows[0]["vocab"] == 512 and rows[0]["tokens"] == 30 * 8 * 64


def test_other_studies_params_equal_real_modules(dry_runs):
    """One row per architecture family, rebuilt by hand from what the study promises."""
    soft = {r["variant"]: r for r in table(dry_runs("softmax1_ab", "smoke"))}
    assert set(soft) == {"softmax", "softmax1"}
    for variant, r in soft.items():  # the baby GPT is nanoGPT's model: tied embeddings, a position table, no biases
        assert r["lm_head"] == 0 and r["embed"] == (r["vocab"] + SMOKE["seq_len"]) * r["width"]
        assert (
            numel(
                arch="nanogpt",
                qk_norm=False,
                logit_softcap=None,
                bias=False,
                vocab_size=r["vocab"],
                n_layer=r["L"],
                n_embd=r["width"],
                n_head=r["heads"],
                seq_len=SMOKE["seq_len"],
                tie_embeddings=True,
                softmax1=variant == "softmax1",
            )["total"]
            == r["params"]
        )
    assert soft["softmax"]["params"] == soft["softmax1"]["params"]  # softmax1 adds no parameters

    toep = {r["variant"]: r for r in table(dry_runs("toeplitz_flags", "smoke"))}
    assert set(toep) == {"mean_proj", "mean_noproj", "nomean_proj", "nomean_noproj"}
    for variant, r in toep.items():
        proj = variant.endswith("_proj")
        real = numel(
            vocab_size=r["vocab"],
            n_layer=r["L"],
            n_embd=r["width"],
            n_head=r["heads"],
            seq_len=SMOKE["seq_len"],
            mixer="toeplitz",
            toep_mean=variant.startswith("mean"),
            toep_proj=proj,
            mlp_ratio=1.0,
        )
        assert real["total"] == r["params"], r
        # per block: one filter per head and lag, in/out projections with biases when on (the note's nn.Linear),
        # a 1x MLP (the note's MLP 512 = width)
        C, L = r["width"], r["L"]
        assert r["blocks"] == L * (r["heads"] * SMOKE["seq_len"] + (2 * C * C + 2 * C if proj else 0) + 2 * C * C)

    vocab = table(dry_runs("vocab_depth", "smoke"))
    for r in vocab:
        tied = r["trial"].endswith("_tied")
        assert r["trial"] == f"vocab_depth_v{r['vocab']}_d{r['L']}" + ("_tied" if tied else "")
        assert (r["lm_head"] == 0) == tied
        assert (
            numel(vocab_size=r["vocab"], n_layer=r["L"], n_embd=r["width"], n_head=r["heads"], tie_embeddings=tied)[
                "total"
            ]
            == r["params"]
        )


def test_vocab_depth_rows(dry_runs):
    # the note's three vocabs (65,536, 24,576, 32,768) / 16 and / 4 (tests/study/test_vocab_depth_design.py)
    for profile, vocabs in (("smoke", {4096, 1536, 2048}), ("cpu", {16384, 6144, 8192})):
        rows = table(dry_runs("vocab_depth", profile))
        assert len(rows) == 2 * len(vocabs)  # x tied / untied
        assert {r["vocab"] for r in rows} == vocabs
        for v in vocabs:  # tying keeps the dims: the same blocks, one table fewer
            untied, tied = [r for r in rows if r["vocab"] == v]
            assert (untied["L"], untied["width"], untied["blocks"]) == (tied["L"], tied["width"], tied["blocks"])
            assert untied["params"] - tied["params"] == v * untied["width"]


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_scaling_pairs_variant_with_baseline_at_each_budget(dry_runs, profile):
    rows = table(dry_runs("scaling", profile))
    assert len(rows) == 8  # 4 budgets x (baseline, variant)
    by_budget = {}
    for r in rows:
        m = re.fullmatch(r"scaling_(baseline|nanohead_p40)_([0-9.]+)M", r["trial"])
        assert m, r["trial"]
        by_budget.setdefault(float(m.group(2)), {})[m.group(1)] = r
    assert len(by_budget) == 4
    for budget, pair in by_budget.items():
        assert set(pair) == {"baseline", "nanohead_p40"}
        assert pair["baseline"]["params"] == pair["nanohead_p40"]["params"]  # the variant runs on the baseline's dims
        assert abs(pair["baseline"]["params"] / (budget * 1e6) - 1) <= 0.05
    assert len({pair["baseline"]["params"] for pair in by_budget.values()}) == 4  # a real frontier: 4 sizes


def test_softmax1_and_toeplitz_names(dry_runs):
    assert [r["trial"] for r in table(dry_runs("softmax1_ab", "smoke"))] == [
        "softmax1_ab_softmax",
        "softmax1_ab_softmax1",
    ]
    assert sorted(r["trial"] for r in table(dry_runs("toeplitz_flags", "cpu"))) == sorted(
        f"toeplitz_{m}_{p}" for m in ("mean", "nomean") for p in ("proj", "noproj")
    )


@pytest.mark.parametrize("profile,samples", [("smoke", 4), ("cpu", 12)])
def test_nanohead_search_dry_run_describes_the_search(dry_runs, profile, samples):
    proc = dry_runs("nanohead_search", profile)
    assert proc.returncode == 0, proc.stderr
    assert f"{samples} trials" in proc.stdout and "TPE" in proc.stdout and "asha" in proc.stdout
    for key in ("nanohead_proportion", "nanohead_dim", "n_layer", "lr"):
        assert key in proc.stdout
    assert "object at 0x" not in proc.stdout  # the space in words, not Python reprs
    if profile != "smoke":
        return
    multi = dry_runs("nanohead_search", profile, "--set", "objective=multi", "--num-samples", "3")
    assert multi.returncode == 0, multi.stderr
    assert "3 trials" in multi.stdout and "NSGA-II" in multi.stdout


# ----------------------------------------------------------------------------- options that change the table


def test_seeds_repeat_every_config(dry_runs):
    one = table(dry_runs("nanohead_grid", "smoke"))
    three = table(dry_runs("nanohead_grid", "smoke", "--seeds", "3"))
    assert len(three) == 3 * len(one)
    assert sorted(r["trial"] for r in three) == sorted(
        f"{r['trial']}{suffix}" for r in one for suffix in ("", "_s1", "_s2")
    )
    assert {r["params"] for r in three} == {one[0]["params"]}


def test_set_nanohead_dim_renames_and_resplits(dry_runs):
    base = table(dry_runs("nanohead_grid", "smoke"))
    rows = table(dry_runs("nanohead_grid", "smoke", "--set", "nanohead_dim=2"))
    assert [r["trial"] for r in rows] == [f"{r['trial']}_nd2" for r in base]
    assert rows[0]["nano"] == "-"
    width, heads = rows[0]["width"], rows[0]["heads"]
    for r, p in zip(rows[1:], (0.2, 0.4, 0.6, 0.8)):
        count, dim = map(int, r["nano"].split("x"))
        assert dim == 2
        # the split rule: normal heads keep an even width, nano heads fill the rest exactly; count nearest p*width/dim
        assert (width - count * dim) % (2 * heads) == 0 and (width - count * dim) // heads >= 2
        assert abs(count - p * width / 2) <= heads / 2
        assert r["params"] == base[0]["params"]  # still param-matched to the baseline
        assert (
            numel(
                vocab_size=r["vocab"], n_layer=r["L"], n_embd=width, n_head=heads, nanohead_proportion=p, nanohead_dim=2
            )["total"]
            == r["params"]
        )


def test_set_list_makes_an_axis(dry_runs):
    rows = table(dry_runs("nanohead_grid", "smoke", "--set", "nanohead_proportion=0.1,0.3"))
    depth = rows[0]["L"]
    assert [r["trial"] for r in rows] == [f"nanohead_p10_d{depth}", f"nanohead_p30_d{depth}"]
    assert [r["variant"] for r in rows] == ["p10", "p30"]
    assert rows[0]["params"] == rows[1]["params"]


def test_set_fixes_a_key_and_a_budget_of_none_keeps_the_given_dims(dry_runs):
    rows = table(
        dry_runs(
            "nanohead_grid",
            "smoke",
            "--set",
            "budget=none",
            "--set",
            "n_embd=96",
            "--set",
            "n_head=3",
            "--set",
            "n_layer=3",
            "--set",
            "nanohead_proportion=0.4",
        )
    )
    assert len(rows) == 1 and rows[0]["trial"] == "nanohead_p40_d3"
    assert (rows[0]["L"], rows[0]["width"], rows[0]["heads"]) == (3, 96, 3)
    assert rows[0]["params"] == hand_params(512, 96, 3)["total"]


def test_dry_runs_write_nothing(dry_runs, dry_run_outputs):
    for key in RUNS:
        assert dry_runs(*key).returncode == 0
    assert list(dry_run_outputs.iterdir()) == []
