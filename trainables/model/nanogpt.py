"""The `nanogpt` architecture flavour: karpathy/nanoGPT's model.py (commit eba36e8, the softmax1 note's), in its style.

LayerNorm (bias optional), learned absolute positions, a fused c_attn, GELU MLP, tied embeddings, dropout on
the embeddings, the attention weights and both residual branches; no RoPE, no QK norm, no logit softcap.
Parameter names and shapes are nanoGPT's own, so a state dict saved by its model.py loads with strict=True
and gives the same logits. What it adds, for the interface it shares with gpt.GPT (train.py, the probes,
generate): softmax1 (cfg.softmax1), the sdpa/manual/flash backends, a KV cache, untied embeddings as an option,
the loss per token (loss_reduction="none"). forward returns logits (all positions: nanoGPT's inference path
keeps the last one only) or, given targets, the loss: not nanoGPT's (logits, loss) pair.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attend, flash_attn_available
from .config import GPTConfig, nanohead_split
from .gpt import GPT, Cache, cache_len, softcap_cross_entropy


class LayerNorm(nn.Module):
    """LayerNorm but with an optional bias (nanoGPT's: its weight and bias keep nanoGPT's names)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        # key, query, value projections for all heads, but in a batch
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)  # the attention weights' dropout is attend()'s dropout_p
        self.cfg = cfg
        self.n_head, self.n_embd, self.dropout = cfg.n_head, cfg.n_embd, cfg.dropout
        self.split = nanohead_split(cfg)  # n_head normal heads, no nano heads: the layout the probes read

    def qkv(self, x: torch.Tensor) -> dict[str, tuple]:
        """x [B, T, C] -> {"normal": (q, k, v)}, each [B, T, n_head, head_dim]: what attention sees."""
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        return {"normal": tuple(t.unflatten(-1, (self.n_head, -1)) for t in (q, k, v))}

    def forward(self, x: torch.Tensor, cache: dict | None = None):
        B, T, C = x.size()
        q, k, v = (t.transpose(1, 2) for t in self.qkv(x)["normal"])  # (B, nh, T, hs)
        if cache is not None:  # generation: this layer's past keys and values
            if "kv" in cache:
                k, v = torch.cat([cache["kv"][0], k], dim=2), torch.cat([cache["kv"][1], v], dim=2)
            cache["kv"] = (k, v)
        # SDPA with is_causal as nanoGPT; softmax1 pads a null key and a null query in front (see attend)
        y = attend(
            q,
            k,
            v,
            softmax1_=self.cfg.softmax1,
            backend=self.cfg.attn_backend,
            dropout_p=self.dropout if self.training else 0.0,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, cache: dict | None = None):
        x = x + self.attn(self.ln_1(x), cache=cache)
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.arch != "nanogpt":
            raise ValueError(
                f"GPTConfig.arch={cfg.arch!r}: NanoGPT builds arch='nanogpt'; build any config with "
                f"trainables.model.build_model"
            )
        if cfg.attn_backend == "flash" and not flash_attn_available():
            raise ValueError(
                "GPTConfig.attn_backend='flash' needs a CUDA GPU and the flash-attn package "
                "(pip install -e .[gpu]); use attn_backend='sdpa' (default) or 'manual'"
            )
        self.cfg = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.seq_len, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
                ln_f=LayerNorm(cfg.n_embd, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:  # in nanoGPT's direction, so that a seed gives nanoGPT's initial weights
            self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(
                "c_proj.weight"
            ):  # residual projections: scaled so the stream's variance holds with depth (GPT-2)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # parameters() yields a tied weight once

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        loss_reduction: str = "mean",
        mixer_path: str = "parallel",
        cache: Cache | None = None,
    ):
        """idx [B, T] -> logits [B, T, vocab]; with targets, the cross-entropy (mean, or [B, T] with
        loss_reduction="none"; targets == -1 are ignored). cache: one dict per layer, for generate().
        mixer_path is gpt.GPT's (Toeplitz heads); attention has one path."""
        B, T = idx.shape
        start = cache_len(cache)
        if start + T > self.cfg.seq_len:
            raise ValueError(f"sequence of {start + T} tokens is longer than GPTConfig.seq_len={self.cfg.seq_len}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache=None if cache is None else cache[i])
        if cache is not None:
            cache.pos += T
        logits = self.lm_head(self.transformer.ln_f(x))
        if targets is None:
            return logits
        return softcap_cross_entropy(logits, targets, None, loss_reduction)  # no cap: F.cross_entropy in float32

    generate = GPT.generate  # the same KV-cached sampling loop, sliding the window past seq_len as nanoGPT does
