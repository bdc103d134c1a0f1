"""A token mixer of your own: a causal depthwise convolution in place of attention, against attention at the
same parameter budget.

    python -m study.run examples/conv_mixer.py --profile smoke

register_mixer makes the class known as mixer = "causal_conv"; before any trial runs, the study checks it
against the contract the built-in mixers pass (causal, gradients reach every parameter, count_params equals
the built model, cached generation equals the full forward).
"""

import torch
from torch import nn
from torch.nn import functional as F

from study import StudySpec, register_mixer


class CausalConv(nn.Module):
    """Each channel mixes the last `KERNEL` positions with its own weights (no position sees a later one)."""

    KERNEL = 4
    has_cache = True  # generation keeps the last KERNEL - 1 inputs

    def __init__(self, cfg):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cfg.n_embd, 1, self.KERNEL) / self.KERNEL)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x, cache=None):  # x: [B, T, C]
        B, T, C = x.shape
        past = cache.get("x") if cache is not None else None
        if past is None:
            past = x.new_zeros(B, self.KERNEL - 1, C)
        full = torch.cat([past, x], dim=1)  # the KERNEL - 1 inputs before x, zeros at the start
        if cache is not None:
            cache["x"] = full[:, -(self.KERNEL - 1) :]
        y = F.conv1d(full.transpose(1, 2), self.weight, groups=C)  # [B, C, T]
        return self.proj(y.transpose(1, 2))

    @staticmethod
    def count_params(cfg) -> int:
        return cfg.n_embd * CausalConv.KERNEL + cfg.n_embd * cfg.n_embd

    @staticmethod
    def flops_per_token(cfg) -> float:
        return 0.0  # the convolution's multiply-adds are its weights': 6 x parameters counts them


register_mixer("causal_conv", CausalConv)

STUDY = StudySpec(
    name="conv_mixer",
    hypothesis="A causal depthwise convolution mixes tokens almost as well as attention at equal parameters",
    base={"budget": 1.6e5},  # every arm sized to this budget with its own mixer
    axes={"mixer": ["attention", "causal_conv"]},
    baseline={"mixer": "attention"},
    profiles={"cpu": {"budget": 2.0e6}},
)
