"""What a user types: `python -m study.run STUDY` and, for a notebook, the same as functions.

    from study import run_study, load_study, StudySpec, register_mixer
    res = run_study("nanohead_grid", profile="smoke", seeds=2, set={"nanohead_dim": 2})
    res = load_study("results/nanohead_grid")
    res.trials, res.summary(), res.report()

Names load on first use, so `python -m study.run --help` imports no torch.
"""

_EXPORTS = {
    "run_study": "study.run",
    "UsageError": "study.errors",
    "RunOptions": "study.run",
    "load_study": "study.api",
    "StudyResult": "study.api",
    "StudySpec": "search_spaces.spec",
    "register_mixer": "trainables.model.mixers",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'study' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
