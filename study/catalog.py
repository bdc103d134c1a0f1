"""The registry of studies: the six built-in ones (each a StudySpec in its own search_spaces module) and the
ones a user's study file adds at run time (study/files.py)."""

from search_spaces import nanohead, scaling, softmax1, toeplitz, vocab_depth
from search_spaces.spec import StudySpec
from study.profiles import PROFILES, Profile

BUILTIN = (nanohead.GRID, nanohead.SEARCH, softmax1.STUDY, toeplitz.STUDY, vocab_depth.STUDY, scaling.STUDY)
STUDIES: dict[str, StudySpec] = {spec.name: spec for spec in BUILTIN}


def register_study(spec: StudySpec) -> StudySpec:
    """Makes a study known by name for this process (a study file's, as it is loaded). A built-in name is refused:
    the results folder and its resume would mix two studies."""
    if spec.name in STUDIES and STUDIES[spec.name] is not spec and STUDIES[spec.name] in BUILTIN:
        raise ValueError(f"name={spec.name!r}: a built-in study has this name; choose another")
    STUDIES[spec.name] = spec
    return spec


def get_study(name: str) -> StudySpec:
    if name not in STUDIES:
        raise ValueError(
            f"unknown study {name!r}: choose one of {', '.join(STUDIES)}, or give a study file (NAME.toml or NAME.py)"
        )
    return STUDIES[name]


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
