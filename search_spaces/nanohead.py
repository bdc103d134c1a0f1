"""Nano heads (seed 000/001): mix 2-5 dim heads without RoPE into a nanochat GPT.

Hypothesis: tiny heads learn simple patterns (copy the previous token, attend to a related word) for far
fewer parameters, so some share of nano heads (0.2-0.4) beats the baseline; 0.8 degrades.
Every proportion runs on the p=0 baseline's dims; the split rule keeps the parameter count identical.
"""
from .common import architecture, seed_suffix

AXES = {"nanohead_proportion": [0.0, 0.2, 0.4, 0.6, 0.8]}
SEARCH_AXES = ("nanohead_proportion", "nanohead_dim", "n_layer", "lr")


def base(profile) -> dict:
    return {**profile.train_keys(), "nanohead_dim": 3, "lr": 3e-3 if profile.name in ("smoke", "cpu") else 2e-3}


def resolve(config: dict) -> dict:
    return architecture(config, nanohead_proportion=0.0)


def variant(config: dict) -> str:
    return f"p{round(config['nanohead_proportion'] * 100):02d}"


def trial_name(config: dict) -> str:
    """nanohead_p20_d4 as in the seed: proportion in percent, then the depth."""
    return f"nanohead_{variant(config)}_d{config['n_layer']}" + (f"_nd{config['nanohead_dim']}" if config.get("nanohead_dim", 3) != 3 else "") + seed_suffix(config)


def search_space(profile, tune=None) -> dict:
    """nanohead_search: proportion, nano head dim, depth and learning rate (width fixed by the profile's baseline).
    The catalog calls axes(profile) alone: Tune's domains are imported here, on first use (starts nothing)."""
    if tune is None:
        from ray import tune
    return {"nanohead_proportion": tune.uniform(0.0, 0.8), "nanohead_dim": tune.choice([2, 3, 4, 5]),
            "n_layer": tune.randint(2, 7 if profile.name != "smoke" else 4), "lr": tune.loguniform(1e-3, 1e-2)}


def search_resolve(config: dict) -> dict:
    """The width comes from the baseline at the profile's budget; depth is searched, so params vary with it."""
    n_layer = config["n_layer"]
    resolved = architecture({**config}, nanohead_proportion=0.0)
    resolved["n_layer"] = n_layer
    return resolved


def search_trial_name(config: dict, index: int) -> str:
    return f"nanohead_search_{index:04d}_{variant(config)}_nd{config['nanohead_dim']}_d{config['n_layer']}"
