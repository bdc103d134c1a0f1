"""karpathy/nanoGPT's model.py (commit eba36e8, the softmax1 note's) written out: its parameter names and shapes,
and its forward in float64 from a state dict, with explicit T x T attention. The reference for arch="nanogpt".

Read from nanoGPT's file, not from trainables: LayerNorm(eps 1e-5, bias optional), learned positions added to
the token embeddings, causal self-attention with q, k, v split from one c_attn in that order, heads of
n_embd / n_head, scale 1/sqrt(head_dim), exact (erf) GELU in a 4x MLP, a final LayerNorm, lm_head without bias.
Dropout is the identity (eval). softmax1 is the formula exp(s_i) / (1 + sum_j exp(s_j)), not nanoGPT's.
"""

from __future__ import annotations

import math

import torch

F64 = torch.float64


def nanogpt_shapes(
    vocab_size: int, block_size: int, n_layer: int, n_embd: int, bias: bool, mlp_hidden: int | None = None
) -> dict:
    """name -> shape of every tensor in a state dict saved by nanoGPT's GPT (torch >= 2: no attn.bias mask buffer).
    lm_head.weight is listed too: nanoGPT ties it to wte and state_dict() saves it under both names."""
    C, H = n_embd, mlp_hidden or 4 * n_embd
    shapes = {"transformer.wte.weight": (vocab_size, C), "transformer.wpe.weight": (block_size, C)}
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        layer = {
            "ln_1.weight": (C,),
            "ln_1.bias": (C,),
            "attn.c_attn.weight": (3 * C, C),
            "attn.c_attn.bias": (3 * C,),
            "attn.c_proj.weight": (C, C),
            "attn.c_proj.bias": (C,),
            "ln_2.weight": (C,),
            "ln_2.bias": (C,),
            "mlp.c_fc.weight": (H, C),
            "mlp.c_fc.bias": (H,),
            "mlp.c_proj.weight": (C, H),
            "mlp.c_proj.bias": (C,),
        }
        shapes |= {p + k: s for k, s in layer.items() if bias or not k.endswith(".bias")}
    shapes["transformer.ln_f.weight"] = (C,)
    if bias:
        shapes["transformer.ln_f.bias"] = (C,)
    shapes["lm_head.weight"] = (vocab_size, C)
    return shapes


def random_nanogpt_state_dict(shapes: dict, *, tied: bool = True, seed: int = 0, dtype=torch.float32) -> dict:
    """Random values for every tensor, of a size that keeps the logits O(1-10): matrices N(0, 1/fan_in), tables
    N(0, 1), LayerNorm weights around 1, biases N(0, 0.1). Tied: lm_head.weight IS the wte tensor, as nanoGPT saves it."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in shapes.items():
        if name == "lm_head.weight" and tied:
            sd[name] = sd["transformer.wte.weight"]
            continue
        x = torch.randn(shape, generator=g, dtype=F64)
        if name.endswith(".bias"):
            x = 0.1 * x
        elif len(shape) == 1:  # LayerNorm weight
            x = 1 + 0.2 * x
        elif "wte" not in name and "wpe" not in name:
            x = x / math.sqrt(shape[1])
        sd[name] = x.to(dtype)
    return sd


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-5) * weight + bias, with the biased (population) variance, over the last dim."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + 1e-5) * weight
    return y if bias is None else y + bias


def gelu(x: torch.Tensor) -> torch.Tensor:
    """nn.GELU() (approximate='none'): x Phi(x) = x (1 + erf(x / sqrt 2)) / 2."""
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def nanogpt_logits(sd: dict, n_head: int, idx: torch.Tensor, *, softmax1: bool = False) -> torch.Tensor:
    """nanoGPT's GPT.forward(idx, targets) logits [B, T, V] (every position), in float64, from a state dict."""
    w = {k: v.detach().to(F64) for k, v in sd.items()}
    B, T = idx.shape
    C = w["transformer.wte.weight"].shape[1]
    D = C // n_head

    def linear(x, name):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    def ln(x, name):
        return layer_norm(x, w[name + ".weight"], w.get(name + ".bias"))

    n_layer = len({k.split(".")[2] for k in w if k.startswith("transformer.h.")})
    x = w["transformer.wte.weight"][idx] + w["transformer.wpe.weight"][:T]
    visible = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        q, k, v = linear(ln(x, p + "ln_1"), p + "attn.c_attn").split(C, dim=-1)
        q, k, v = (t.reshape(B, T, n_head, D).transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        s = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        e = torch.where(visible, torch.exp(s), torch.zeros((), dtype=F64))  # masked keys: exp(-inf) = 0
        att = e / ((1 if softmax1 else 0) + e.sum(dim=-1, keepdim=True))
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + linear(y, p + "attn.c_proj")
        x = x + linear(gelu(linear(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    return ln(x, "transformer.ln_f") @ w["lm_head.weight"].T
