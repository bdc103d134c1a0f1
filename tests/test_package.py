import importlib


def test_packages_import_without_side_effects():
    # Importing the packages must not start Ray or read a corpus (DESIGN: nothing costly at import).
    for name in ["study", "trainables", "trainables.model", "trainables.data", "search_spaces", "reports"]:
        importlib.import_module(name)
    import ray

    assert not ray.is_initialized()
