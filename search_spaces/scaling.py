"""Scaling: a chosen variant vs the baseline at 4+ parameter budgets, so the report can draw a real
loss-vs-parameters frontier and fit L(N) = E + A N^-alpha per arm. The variant is set with
--set scaling_variant=NAME (one of VARIANTS).

--set match=flops matches compute instead (an isoFLOP design, Chinchilla's approach 2/3): for each compute budget C
(`compute`, in 6ND FLOPs) it trains several model sizes N, each at a planned tokens per parameter r
(`tokens_per_param`), so N = sqrt(C / (6 r)) and D = C / (6 N) = r N; the report fits L(N, D) = E + A/N^alpha +
B/D^beta per arm (reports/scaling_fit.py)."""

import math

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
MATCHES = ("params", "flops")
# match=flops: compute budgets C = 6 N D and the tokens per parameter of each budget's sizes. Ratios 4x apart put the
# sizes 2x apart, around the middle ratio; 20 is Chinchilla's compute-optimal one.
COMPUTE = {
    "smoke": [1e10, 2e10, 4e10],  # not a design: the smallest models that build, for a seconds-long end-to-end run
    "cpu": [1.5e11, 3e11, 6e11],
    "gpu": [1e16, 3e16, 1e17],
    "paper": [1e17, 3e17, 1e18],
}
FLOPS_TOLERANCE = 0.15  # the solver's: small sizes are far apart, and D = C / (6 N) follows the N built
TOKENS_PER_PARAM = {
    "smoke": [0.05, 0.2, 0.8],
    "cpu": [1.5, 4.5, 13.5],
    "gpu": [5.0, 20.0, 80.0],
    "paper": [5.0, 20.0, 80.0],
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
    "max_tokens": (
        "max_tokens_per_param x budget (match=params), compute / (6 x params) (match=flops)",
        "set max_tokens_per_param, or compute and tokens_per_param, instead",
    ),
    "max_steps": (
        "compute / (6 x params x tokens per step) with match=flops",
        "set compute and tokens_per_param instead",
    ),
}


def axes(profile, keys: dict) -> dict:
    """match=params: parameter budgets x arms. match=flops: compute budgets x tokens per parameter x arms; on cpu with
    bpe:512, since only a small vocabulary leaves the smallest sizes room for blocks and the corpus room for their
    tokens (4 passes at most)."""
    if keys.get("match", "params") != "flops":
        return {"budget": BUDGETS[profile.name], "arm": ["baseline", "variant"]}
    out = {"compute": COMPUTE[profile.name], "tokens_per_param": TOKENS_PER_PARAM[profile.name]}
    if profile.name == "cpu":
        out["tokenizer"] = ["bpe:512"]  # one value: a --set tokenizer replaces it as it replaces a base key
    return {**out, "arm": ["baseline", "variant"]}


def base(profile) -> dict:
    keys = {**profile.train_keys(), "scaling_variant": "nanohead_p40", "lr": 3e-3}
    del keys["budget"]  # each trial's size comes from an axis: budget (match=params) or compute (match=flops)
    if profile.name == "cpu":  # a smaller vocab leaves the small budgets room for blocks
        keys["tokenizer"] = "bpe:2048"
    elif profile.name in ("gpu", "paper"):  # the nanochat GPT at its budgets: nanochat's data
        keys["corpus"] = FINEWEB_EDU
    return keys


def resolve(config: dict) -> dict:
    match = config.get("match", "params")
    if match not in MATCHES:
        raise ValueError(f"match={match!r}: must be one of {', '.join(MATCHES)}")
    if match == "flops":
        return _flops_trial(config)
    for key in ("compute", "tokens_per_param"):
        if config.get(key) is not None:
            raise ValueError(f"{key}={config[key]!r}: applies to match=flops only; add --set match=flops")
    config = {k: v for k, v in config.items() if k != "match"}  # the default: a params plan is what it always was
    return _params_trial(config)


def _positive(config: dict, key: str) -> float:
    value = config.get(key)
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"{key}={value!r}: must be a number > 0 with match=flops")
    return float(value)


def _flops_trial(config: dict) -> dict:
    """An isoFLOP trial: N from (C, r), then D = C / (6 N) of the model actually built, rounded to whole steps."""
    from search_spaces.common import tokenizer_vocab_size
    from trainables.model import count_params
    from trainables.train import resolve_configs

    for key in ("budget", "max_tokens_per_param"):
        if config.get(key) is not None:
            raise ValueError(
                f"{key}={config[key]!r}: match=flops sizes each trial from compute and tokens_per_param; set those "
                f"instead"
            )
    compute, ratio = _positive(config, "compute"), _positive(config, "tokens_per_param")
    out = _params_trial({**config, "budget": math.sqrt(compute / (6 * ratio))}, tolerance=FLOPS_TOLERANCE)
    gpt, tc = resolve_configs({**out, "max_tokens": None}, tokenizer_vocab_size(out["tokenizer"]))
    n = count_params(gpt)["total"]
    per_step = tc.total_batch_tokens or tc.batch_size * gpt.seq_len
    steps = max(1, round(compute / (6 * n) / per_step))
    out.update(max_steps=steps, max_tokens=steps * per_step)
    return out


def _params_trial(config: dict, tolerance: float = 0.05) -> dict:
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
    out = architecture(config, tolerance)  # the baseline's dims at this budget; the variant runs on the same dims
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
    if config.get("match") == "flops":
        return f"scaling_{variant(config)}_C{config['compute']:.3g}_r{config['tokens_per_param']:g}" + seed_suffix(
            config
        )
    return f"scaling_{variant(config)}_{config['target_params'] / 1e6:g}M" + seed_suffix(config)


STUDY = StudySpec(
    name="scaling",
    family="scaling",
    note="000_f68f42f0f06710c9.txt (default variant nanohead_p40)",
    hypothesis="Does the variant's advantage (or deficit) hold across parameter budgets? Fit L(N) = E + A N^-alpha "
    "per arm.",
    base=base,
    axes=axes,
    keyed_axes=True,
    resolve=resolve,
    variant=variant,
    trial_name=trial_name,
    baseline="baseline",
    views=("scaling", "scaling_flops"),
    study_keys=("scaling_variant", "max_tokens_per_param", "match", "compute", "tokens_per_param"),
    derived=DERIVED,
)
