"""The model core: one GPT that carries every architecture the studies compare. Imports no Ray."""
from .attention import softmax1
from .config import GPTConfig, HeadSplit, nanohead_split
from .gpt import GPT
from .params import Candidate, count_params, flops_per_token, solve_architecture

__all__ = ["GPT", "GPTConfig", "HeadSplit", "Candidate", "count_params", "flops_per_token", "nanohead_split",
           "softmax1", "solve_architecture"]
