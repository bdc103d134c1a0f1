"""Epochs over the corpus: the dry-run's column, the max_epochs line, and each paper profile's own corpus.

References: the planned tokens are the smoke profile's steps x batch x seq_len written out here, the train tokens
are read from the shards' meta.json, the dataset names are the README's."""

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from study_cli import SMOKE, STUDY_NAMES, parse_table, run_cli

SMOKE_TOKENS = SMOKE["max_steps"] * SMOKE["batch_size"] * SMOKE["seq_len"]  # 30 x 8 x 64 = 15,360
PAPER_CORPORA = {  # README, "Data and licenses"
    "nanohead_grid": "hf:karpathy/fineweb-edu-100b-shuffle:1000000",
    "nanohead_search": "hf:karpathy/fineweb-edu-100b-shuffle:1000000",
    "vocab_depth": "hf:karpathy/fineweb-edu-100b-shuffle:1000000",
    "scaling": "hf:karpathy/fineweb-edu-100b-shuffle:1000000",
    "toeplitz_flags": "hf:SimpleStories/SimpleStories:1000000",
    "softmax1_ab": "hf:HuggingFaceGECLM/REDDIT_comments::todayilearned:15000000",
}
OFFLINE = {"HF_HUB_OFFLINE": "1"}  # a dry run never contacts the Hub; this makes sure of it


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """300 real wiki documents as a .jsonl: its bpe:512 shards take a second."""
    from trainables.data import load_corpus

    path = tmp_path_factory.mktemp("corpus") / "wiki300.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in load_corpus("wiki").documents[:300]))
    return str(path)


def test_epochs_are_planned_tokens_over_the_shards_train_tokens(small_corpus, tmp_path):
    cache = str(tmp_path / "cache")
    args = [
        "softmax1_ab",
        "--profile",
        "smoke",
        "--set",
        f"corpus={small_corpus}",
        "--dry-run",
        "--output",
        tmp_path / "o",
    ]
    before = run_cli(cache, *args)
    assert before.returncode == 0 and before.stderr == "", before.stderr
    assert all(row["epochs"].startswith("~") for row in parse_table(before.stdout))  # not prepared: an estimate
    assert "estimated from its bytes" in before.stdout

    from trainables.data import prepare_tokens

    data = prepare_tokens(small_corpus, "bpe:512", cache_dir=cache)
    n_train = json.loads(data.meta_path.read_text())["n_train_tokens"]
    after = run_cli(cache, *args)
    assert after.returncode == 0 and after.stderr == "", after.stderr
    rows = parse_table(after.stdout)
    assert [row["tokens"] for row in rows] == [SMOKE_TOKENS] * 2
    assert [row["epochs"] for row in rows] == [float(f"{SMOKE_TOKENS / n_train:.2f}")] * 2
    assert f"{small_corpus} with bpe:512: {n_train:,}" in after.stdout


def test_max_epochs_moves_the_line(tmp_path, token_cache):
    """The paper plan over the 5 MB corpus is refused (tests/study/test_study_errors.py); max_epochs=2000 lets it."""
    proc = run_cli(
        token_cache,
        "softmax1_ab",
        "--profile",
        "paper",
        "--set",
        "corpus=wiki",
        "--set",
        "max_epochs=2000",
        "--dry-run",
        "--output",
        tmp_path / "o",
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for row in parse_table(proc.stdout):
        assert row["tokens"] == 100_000 * 64 * 256  # the note's max_iters x batch_size x block_size
        assert 4 < float(row["epochs"].lstrip("~").replace(",", "")) <= 2000


@pytest.fixture(scope="module")
def paper_dry_runs(token_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")

    def one(study):
        return study, run_cli(
            token_cache, study, "--profile", "paper", "--dry-run", "--output", out / study, env=OFFLINE, timeout=300
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(one, STUDY_NAMES))


@pytest.mark.parametrize("study", STUDY_NAMES)
def test_paper_profiles_plan_on_the_notes_corpora_offline(study, paper_dry_runs):
    """Offline and not fetched yet: the plan shows "?" for epochs rather than failing."""
    proc = paper_dry_runs[study]
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert f"{PAPER_CORPORA[study]} with " in proc.stdout and "a hub corpus not fetched yet" in proc.stdout
    if study != "nanohead_search":
        assert {row["epochs"] for row in parse_table(proc.stdout)} == {"?"}


def test_a_hub_corpus_too_small_for_the_plan_is_refused_once_fetched(tmp_path, monkeypatch, capsys):
    """Its size is unknown to the plan; prepare_data fetches and counts it, then applies the same line."""
    datasets = pytest.importorskip("datasets")
    from study.catalog import get_profile, get_study
    from study.run import UsageError, plan_trials, prepare_data
    from trainables.data import load_corpus

    monkeypatch.setenv("NANOSTUDIES_CACHE", str(tmp_path / "cache"))
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": load_corpus("wiki").documents[:300]}).save_to_disk(str(saved))
    overrides = {"corpus": f"hf:{saved}", "max_epochs": 0.05}
    trials = plan_trials(get_study("softmax1_ab"), get_profile("smoke"), overrides, 1, 1)  # "?": not fetched
    with pytest.raises(UsageError, match=r"15,360 tokens: 0\.\d\d epochs of corpus 'hf:.*max_epochs=0\.05") as refused:
        prepare_data([t["config"] for t in trials])
    n_train = json.loads(next((tmp_path / "cache" / "tokens").glob("*/meta.json")).read_text())["n_train_tokens"]
    assert f"{SMOKE_TOKENS / n_train:.2f} epochs" in str(refused.value) and f"{n_train:,} train tokens" in str(
        refused.value
    )
    assert os.path.isdir(tmp_path / "cache" / "corpora")  # fetched once, into the cache
