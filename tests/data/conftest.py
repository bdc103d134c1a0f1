import json

import pytest

from trainables.data import load_corpus


@pytest.fixture(scope="session")
def wiki():
    """The real embedded corpus (~10k Wikipedia leads), read once per session."""
    return load_corpus("wiki")


@pytest.fixture(scope="session")
def small_source(wiki, tmp_path_factory):
    """A .jsonl of the first 300 real wiki documents: fast to tokenize, big enough to train on."""
    path = tmp_path_factory.mktemp("corpus") / "wiki300.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in wiki.documents[:300]), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def small_gpt2(small_source, tmp_path_factory):
    """TokenData of small_source under gpt2, in a session cache dir."""
    from trainables.data import prepare_tokens

    return prepare_tokens(small_source, "gpt2", cache_dir=tmp_path_factory.mktemp("cache"))
