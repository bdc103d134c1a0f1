"""The model core: one GPT that carries every architecture the studies compare, and nanoGPT's own
(arch="nanogpt"); build_model(cfg) builds either. A user's own token mixer plugs in through register_mixer
(its docstring is the contract) and is tested against it by check_mixer. Imports no Ray."""

from .attention import softmax1
from .config import GPTConfig, HeadSplit, nanohead_split
from .gpt import GPT
from .mixers import MixerContractError, check_mixer, register_mixer, registered_mixers
from .nanogpt import NanoGPT
from .params import Candidate, count_params, flops_per_token, solve_architecture


def build_model(cfg: GPTConfig) -> GPT | NanoGPT:
    """The model a config describes: nanoGPT's architecture for arch="nanogpt", else the nanochat-style GPT."""
    return NanoGPT(cfg) if cfg.arch == "nanogpt" else GPT(cfg)


__all__ = [
    "GPT",
    "NanoGPT",
    "build_model",
    "GPTConfig",
    "HeadSplit",
    "MixerContractError",
    "Candidate",
    "check_mixer",
    "count_params",
    "flops_per_token",
    "nanohead_split",
    "register_mixer",
    "registered_mixers",
    "softmax1",
    "solve_architecture",
]
