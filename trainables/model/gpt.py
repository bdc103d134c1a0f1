"""A nanochat-style decoder-only transformer that carries every architecture the studies compare.

Pre-norm blocks (RMSNorm without gain), rotary embeddings, QK norm, relu^2 MLP, no biases,
untied embeddings by default, logit softcap, GQA. Token mixing per block is either causal
self-attention (normal + nano heads, softmax or softmax1) or the multi-head Toeplitz mixer.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import CausalSelfAttention, flash_attn_available, norm, rotary_tables
from .config import GPTConfig, nanohead_split
from .toeplitz import ToeplitzMixer


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=False)
        self.c_proj = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.relu(self.c_fc(x)).square()))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attn = CausalSelfAttention(cfg) if cfg.mixer == "attention" else ToeplitzMixer(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mixer_path: str, cache: dict | None):
        if isinstance(self.attn, CausalSelfAttention):
            x = x + self.attn(norm(x), cos, sin, cache)
        else:
            x = x + self.attn(norm(x), mixer_path, cache)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.attn_backend == "flash" and cfg.mixer == "attention" and not flash_attn_available():
            raise ValueError("GPTConfig.attn_backend='flash' needs a CUDA GPU and the flash-attn package "
                             "(pip install -e .[gpu]); use attn_backend='sdpa' (default) or 'manual'")
        self.cfg = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        # Rotary tables for the normal heads; not parameters, not saved (they follow from the config).
        cos, sin = rotary_tables(nanohead_split(cfg).normal_dim if cfg.mixer == "attention" else 2, cfg.seq_len, cfg.rope_base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections: scaled so the stream's variance holds with depth (GPT-2)
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * cfg.n_layer) ** 0.5)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # parameters() yields a tied weight once

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, loss_reduction: str = "mean",
                mixer_path: str = "parallel", cache: list[dict] | None = None):
        """idx [B, T] -> logits [B, T, vocab]; with targets, the cross-entropy (mean, or [B, T] with
        loss_reduction="none"; targets == -1 are ignored). cache: one dict per layer, for generate()."""
        B, T = idx.shape
        pos = cache_len(cache)
        if pos + T > self.cfg.seq_len:
            raise ValueError(f"sequence of {pos + T} tokens is longer than GPTConfig.seq_len={self.cfg.seq_len}")
        cos, sin = self.cos[pos:pos + T], self.sin[pos:pos + T]
        x = norm(self.transformer.wte(idx))
        for i, block in enumerate(self.transformer.h):
            x = block(x, cos, sin, mixer_path, None if cache is None else cache[i])
        x = norm(x)
        logits = self.lm_head(x)
        if self.cfg.logit_softcap:
            c = self.cfg.logit_softcap
            logits = c * torch.tanh(logits / c)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=-1, reduction=loss_reduction)
        return loss.view(B, T) if loss_reduction == "none" else loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 *, mixer_path: str = "parallel", generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples max_new_tokens after idx [B, T] -> [B, T + max_new_tokens]. temperature=0 is greedy.

        Keys/values (attention) or mixer inputs (Toeplitz) are cached so each new token costs one
        position. Once the context outgrows seq_len, each step reruns the last seq_len tokens (nanoGPT)."""
        cache = [dict() for _ in self.transformer.h]
        logits = self(idx[:, -self.cfg.seq_len:], mixer_path=mixer_path, cache=cache)
        for _ in range(max_new_tokens):
            next_token = sample(logits[:, -1, :], temperature, top_k, generator)
            idx = torch.cat([idx, next_token], dim=1)
            if cache is not None and cache_len(cache) < self.cfg.seq_len:
                logits = self(next_token, mixer_path=mixer_path, cache=cache)
            else:
                cache = None
                logits = self(idx[:, -self.cfg.seq_len:], mixer_path=mixer_path)
        return idx


def cache_len(cache: list[dict] | None) -> int:
    """Positions already held in a generation cache."""
    if not cache or not cache[0]:
        return 0
    first = next(iter(cache[0].values()))
    return first.size(1) if isinstance(first, torch.Tensor) else first[0].size(2)


def sample(logits: torch.Tensor, temperature: float, top_k: int | None, generator=None) -> torch.Tensor:
    """logits [B, V] -> next token ids [B, 1]."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1, generator=generator)
