"""Scaling: a chosen variant vs the baseline at 4+ parameter budgets, so the report can draw a real
loss-vs-parameters frontier and fit L(N) = E + A N^-alpha per arm. The variant is set with
--set scaling_variant=NAME (one of VARIANTS)."""

from .common import FINEWEB_EDU, architecture, seed_suffix
from .spec import StudySpec

VARIANTS = {
    "nanohead_p20": {"nanohead_proportion": 0.2},
    "nanohead_p40": {"nanohead_proportion": 0.4},
    "softmax1": {"softmax1": True},
    "toeplitz_mean_proj": {"mixer": "toeplitz", "toep_mean": True, "toep_proj": True},
}
BUDGETS = {
    "smoke": [1.2e5, 1.6e5, 2.5e5, 4.0e5],  # smoke: 1e5 has no architecture within 5% at vocab 512
    "cpu": [0.75e6, 1.5e6, 3.0e6, 6.0e6],
    "gpu": [10e6, 20e6, 50e6, 100e6],
    "paper": [20e6, 50e6, 100e6, 200e6, 500e6],
}
# What resolve derives, from what, and what to set instead (study.run refuses a --set it would replace).
DERIVED = {
    **dict.fromkeys(
        ("n_layer", "n_embd", "n_head"), ("each budget, head_dim and aspect_ratio (the solver)", "set those instead")
    ),
    **dict.fromkeys(
        sorted({k for keys in VARIANTS.values() for k in keys}),
        ("scaling_variant (on the variant arm)", f"set scaling_variant instead (one of {', '.join(VARIANTS)})"),
    ),
    "max_tokens": ("max_tokens_per_param x budget", "set max_tokens_per_param instead"),
}


def axes(profile) -> dict:
    return {"budget": BUDGETS[profile.name], "arm": ["baseline", "variant"]}


def base(profile) -> dict:
    keys = {**profile.train_keys(), "scaling_variant": "nanohead_p40", "lr": 3e-3}
    if profile.name == "cpu":  # a smaller vocab leaves the small budgets room for blocks
        keys["tokenizer"] = "bpe:2048"
    elif profile.name in ("gpu", "paper"):  # the nanochat GPT at its budgets: nanochat's data
        keys["corpus"] = FINEWEB_EDU
    return keys


def resolve(config: dict) -> dict:
    if config["scaling_variant"] not in VARIANTS:
        raise ValueError(f"scaling_variant={config['scaling_variant']!r}: must be one of {', '.join(VARIANTS)}")
    if config["arm"] not in ("baseline", "variant"):
        raise ValueError(f"arm={config['arm']!r}: must be baseline or variant")
    if config.get("budget") is None:  # every arm is sized by the solver: without a budget there are no dims
        raise ValueError(
            "budget=None: scaling sizes every trial from its budget; give budgets, e.g. budget=1e5,2e5,4e5"
        )
    per_param = config.get("max_tokens_per_param")
    if per_param is not None and not (
        isinstance(per_param, (int, float)) and not isinstance(per_param, bool) and per_param > 0
    ):
        raise ValueError(
            f"max_tokens_per_param={per_param!r}: must be None or a number > 0 (tokens trained per parameter)"
        )
    out = architecture(config)  # the baseline's dims at this budget; the variant runs on the same dims
    if config["arm"] == "variant":
        out.update(VARIANTS[config["scaling_variant"]])
        if out.get("mixer") == "toeplitz":
            out["nanohead_proportion"] = 0.0
    if per_param:
        out["max_tokens"] = max(1, int(per_param * config["budget"]))
    return out


def variant(config: dict) -> str:
    return "baseline" if config["arm"] == "baseline" else config["scaling_variant"]


def trial_name(config: dict) -> str:
    return f"scaling_{variant(config)}_{config['target_params'] / 1e6:g}M" + seed_suffix(config)


STUDY = StudySpec(
    name="scaling",
    family="scaling",
    note="000_f68f42f0f06710c9.txt (default variant nanohead_p40)",
    hypothesis="Does the variant's advantage (or deficit) hold across parameter budgets? Fit L(N) = E + A N^-alpha "
    "per arm.",
    base=base,
    axes=axes,
    resolve=resolve,
    variant=variant,
    trial_name=trial_name,
    baseline="baseline",
    views=("scaling",),
    study_keys=("scaling_variant", "max_tokens_per_param"),
    derived=DERIVED,
)
