"""The hub source (`hf:...`) on a dataset saved with datasets' save_to_disk: what the Hub path does with a
dataset, minus the network. The documents are checked against the lists saved here, the cache by its files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainables.data import DataError, get_tokenizer, load_corpus, prepare_tokens, split_documents

datasets = pytest.importorskip("datasets")  # the dev extra installs it (it is the hub extra's)
datasets.disable_progress_bars()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stories(wiki):
    """Rows of a story dataset: 200 real documents, a blank row and Reddit's placeholder among them."""
    rows = wiki.documents[:200]
    return rows[:5] + ["   ", "[deleted]"] + rows[5:]


def _save(rows: list[str], path: Path, column: str = "story") -> str:
    datasets.Dataset.from_dict({column: rows, "id": list(range(len(rows)))}).save_to_disk(str(path))
    return str(path)


def test_documents_are_the_saved_rows_in_order(stories, tmp_path):
    saved = _save(stories, tmp_path / "saved")
    kept = [s for s in stories if s.strip() and s != "[deleted]"]  # blank rows and placeholders are not text
    corpus = load_corpus(f"hf:{saved}", cache_dir=tmp_path / "cache")
    assert corpus.documents == kept and corpus.name == f"hf:{saved}"
    # :N reads the first N rows (7 rows: 5 documents, the blank one, the placeholder)
    assert load_corpus(f"hf:{saved}:7", cache_dir=tmp_path / "cache").documents == stories[:5]
    # a DatasetDict: the split is named after the (empty) config
    dd = tmp_path / "dd"
    datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"text": ["a b", "c d"]}), test=datasets.Dataset.from_dict({"text": ["e f"]})
    ).save_to_disk(str(dd))
    assert load_corpus(f"hf:{dd}::test", cache_dir=tmp_path / "cache").documents == ["e f"]
    assert load_corpus(f"hf:{dd}", cache_dir=tmp_path / "cache").documents == ["a b", "c d"]


def test_a_second_load_reads_the_cached_copy_not_the_dataset(stories, tmp_path):
    saved = Path(_save(stories, tmp_path / "saved"))
    cache = tmp_path / "cache"
    first = load_corpus(f"hf:{saved}", cache_dir=cache)
    [copy] = (cache / "corpora").glob("*/documents.parquet")
    mtime = copy.stat().st_mtime_ns
    meta = json.loads((copy.parent / "meta.json").read_text())
    assert meta["n_documents"] == len(first.documents) and meta["fingerprint"] == first.fingerprint
    assert meta["n_bytes"] == sum(len(d.encode()) for d in first.documents)
    # the dataset's data files become garbage: a second load that read them would fail
    for arrow in saved.glob("*.arrow"):
        arrow.write_bytes(b"not arrow")
    second = load_corpus(f"hf:{saved}", cache_dir=cache)
    assert second.documents == first.documents and second.fingerprint == first.fingerprint
    assert copy.stat().st_mtime_ns == mtime and len(list((cache / "corpora").glob("*/documents.parquet"))) == 1


def test_shards_of_a_hub_corpus_and_a_second_prepare_reads_no_document(stories, tmp_path):
    saved = _save(stories, tmp_path / "saved")
    cache = tmp_path / "cache"
    data = prepare_tokens(f"hf:{saved}", "gpt2", cache_dir=cache)
    train_docs, val_docs = split_documents([s for s in stories if s.strip() and s != "[deleted]"])
    gpt2 = get_tokenizer("gpt2")
    assert data.train_tokens().tolist() == [t for d in train_docs for t in [50256, *gpt2.encode_ordinary(d)]]
    assert data.n_val_tokens == sum(1 + len(gpt2.encode_ordinary(d)) for d in val_docs)
    # the cached copy becomes unreadable: a prepare that loaded the documents again would fail
    [copy] = (cache / "corpora").glob("*/documents.parquet")
    copy.write_bytes(b"not parquet")
    again = prepare_tokens(f"hf:{saved}", "gpt2", cache_dir=cache)
    assert again.meta_path == data.meta_path and again.n_train_tokens == data.n_train_tokens
    with pytest.raises(DataError, match="not a readable parquet file"):
        load_corpus(f"hf:{saved}", cache_dir=cache)


def test_bad_hub_sources_say_what_is_allowed(stories, tmp_path):
    saved = _save(stories, tmp_path / "saved")
    with pytest.raises(DataError, match=r"has no split 'val' \(splits: train\)"):
        datasets.DatasetDict(train=datasets.Dataset.from_dict({"text": ["a"]})).save_to_disk(str(tmp_path / "dd"))
        load_corpus(f"hf:{tmp_path / 'dd'}::val", cache_dir=tmp_path)
    with pytest.raises(DataError, match=r"expected hf:NAME\[:CONFIG\[:SPLIT\]\]\[:N\]"):
        load_corpus("hf:a:b:c:d", cache_dir=tmp_path)
    with pytest.raises(DataError, match=r"expected hf:NAME"):
        load_corpus(f"hf:{saved}:0", cache_dir=tmp_path)
    with pytest.raises(DataError, match=rf"written by datasets' save_to_disk: give hf:{saved}$"):
        load_corpus(saved)
    with pytest.raises(DataError, match=r"no text column \(columns: body2, id\)"):
        load_corpus(f"hf:{_save(['x'], tmp_path / 'other', column='body2')}", cache_dir=tmp_path)


def test_offline_the_error_is_one_line_naming_the_dataset_and_how_to_give_it(tmp_path):
    """No network (HF_HUB_OFFLINE=1 makes it so wherever the test runs): one line, at once."""
    code = (
        "import sys\nfrom trainables.data import DataError, load_corpus\ntry:\n"
        f"    load_corpus('hf:SimpleStories/SimpleStories:10', cache_dir={str(tmp_path)!r})\n"
        "except DataError as e:\n    print(e, file=sys.stderr); sys.exit(2)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "'SimpleStories/SimpleStories'" in line and "--set corpus=PATH" in line and "save_to_disk" in line
    assert not list(tmp_path.glob("corpora/*/documents.parquet"))  # nothing cached
