import importlib


def test_packages_import_without_side_effects():
    # Importing the packages must not start Ray or read a corpus (DESIGN: nothing costly at import).
    for name in ["study", "trainables", "trainables.model", "trainables.data", "search_spaces", "reports"]:
        importlib.import_module(name)
    import ray
    assert not ray.is_initialized()


def test_the_trial_code_imports_without_torch_dynamo():
    """Every process of a study (the driver, each trial, each Ray Train worker) imports trainables.tune:
    torch._dynamo, which only a compiled model needs, would add about 0.8 s to each of their starts."""
    import subprocess
    import sys
    from pathlib import Path
    code = "import sys, study.run, trainables.tune; print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "[]", out
