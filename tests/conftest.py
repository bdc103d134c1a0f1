import os

import pytest


@pytest.fixture(scope="session")
def token_cache(tmp_path_factory):
    """One token/tokenizer cache for the whole test session (tests that need a fresh one use tmp_path)."""
    path = os.environ.get("NANOSTUDIES_CACHE") or str(tmp_path_factory.mktemp("nanostudies_cache"))
    os.environ["NANOSTUDIES_CACHE"] = path  # inherited by Ray workers started afterwards
    return path


@pytest.fixture(scope="session")
def ray_local(token_cache):
    """A local Ray cluster on this machine (2 CPUs), with the train_driver resource trials need."""
    import ray

    ray.init(
        num_cpus=2,
        resources={"train_driver": 2},
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
        runtime_env={"env_vars": {"NANOSTUDIES_CACHE": token_cache}},
    )
    yield ray
    ray.shutdown()
