"""Multi-head causal Toeplitz mixer (seed: Experiment 010).

Each of n_head heads owns n_embd/n_head channels and a learnable filter w_h over lags 0..seq_len-1:
    y_t = sum_{s<=t} w_h[t-s] x_s                                  (toep_mean=False)
    y_t = sum_{s<=t} w_h[t-s] x_s / sum_{k=0..t} w_h[k]            (toep_mean=True, a weighted mean)
Each key changes one thing:
  toep_mean       only the division above;
  toep_filter     w from the parameter raw: "linear" w = raw (the note), "exp" w = exp(raw);
  toep_init       raw at init: "normal" N(0, 0.2^2) (the note's model init), "ema" filters that start as
                  decaying averages with time constants from 1 token to seq_len/4, summing to 1;
  toep_proj       input and output projections around the mixing, with biases when toep_proj_bias.
With the note's linear filters the mean divides by a cumulative sum of raw weights, which can pass through
zero (as in the note); toep_filter="exp" makes every weight > 0, so the sum is >= w[0] > 0 for every t.

Two paths with identical outputs, chosen per call:
  parallel:   all heads at once; a dense lower-triangular Toeplitz matmul for short sequences, an
              FFT convolution (O(S log S)) from FFT_MIN_LEN on;
  sequential: the same computation one head at a time (the note benchmarks both in generation).
"""

import math

import torch
import torch.nn as nn

from .config import GPTConfig

PATHS = ("parallel", "sequential")
FFT_MIN_LEN = 512  # below this the dense matmul is faster on CPU (see benchmarks/bench_model.py)


class ToeplitzMixer(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim, self.mean = cfg.n_head, cfg.n_embd // cfg.n_head, cfg.toep_mean
        self.exp = cfg.toep_filter == "exp"
        self.raw = nn.Parameter(self._init_raw(cfg.n_head, cfg.seq_len, cfg.toep_filter, cfg.toep_init))
        self.in_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.toep_proj_bias) if cfg.toep_proj else None
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.toep_proj_bias) if cfg.toep_proj else None
        for proj in (self.in_proj, self.c_proj):
            if proj is not None and proj.bias is not None:
                nn.init.zeros_(proj.bias)  # as the note's model init (GPT's init sets only the weights)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    @staticmethod
    def _init_raw(n_head: int, seq_len: int, kind: str, init: str) -> torch.Tensor:
        if init == "normal":
            return torch.randn(n_head, seq_len) * 0.2
        # Heads start as exponential moving averages with time constants from 1 token to seq_len/4,
        # so some heads look locally and others far back from the first step; sum 1 keeps the scale.
        lags = torch.arange(seq_len, dtype=torch.float32)
        taus = torch.logspace(0, math.log10(max(seq_len / 4, 1.0)), n_head)
        log_w = -lags[None, :] / taus[:, None]  # [n_head, seq_len]
        log_w = log_w - torch.logsumexp(log_w, dim=1, keepdim=True)
        return log_w.clamp(min=-30.0) if kind == "exp" else torch.exp(log_w)

    def filters(self) -> torch.Tensor:
        """The effective filters w [n_head, seq_len], before the mean's division."""
        return torch.exp(self.raw) if self.exp else self.raw

    def forward(self, x: torch.Tensor, path: str = "parallel", cache: dict | None = None) -> torch.Tensor:
        """x: [B, T, C]. cache (generation): this layer's dict holding the mixer inputs seen so far."""
        if path not in PATHS:
            raise ValueError(f"mixer path={path!r}: must be one of {', '.join(PATHS)}")
        B, T, C = x.shape
        if self.in_proj is not None:
            x = self.in_proj(x)
        x = x.view(B, T, self.n_head, self.head_dim)
        past = 0
        if cache is not None:
            if "x" in cache:
                past = cache["x"].size(1)
                x = torch.cat([cache["x"], x], dim=1)
            cache["x"] = x
        w = self.filters()[:, : past + T]  # [H, S]
        heads = [slice(None)] if path == "parallel" else [slice(h, h + 1) for h in range(self.n_head)]
        y = torch.cat([causal_conv(x[:, :, h], w[h].to(x.dtype), out_from=past) for h in heads], dim=2)
        if self.mean:
            # the cumulative sum in float32 at least: in bf16 its rounding grows with t (and linear filters cross zero)
            total = torch.cumsum(w.to(torch.promote_types(w.dtype, torch.float32)), dim=1)[:, past:]
            y = y / total.T[None, :, :, None].to(y.dtype)
        y = y.reshape(B, T, C)
        if self.c_proj is not None:
            y = self.c_proj(y)
        return self.resid_dropout(y)


def causal_conv(x: torch.Tensor, w: torch.Tensor, out_from: int = 0) -> torch.Tensor:
    """y_t = sum_{s<=t} w[h, t-s] x[:, s, h] for t >= out_from. x: [B, S, H, D], w: [H, S] -> [B, S-out_from, H, D]."""
    S = x.size(1)
    if out_from > 0:
        # Decoding: only the newest positions are needed; each is a dot product with the reversed filter.
        t = torch.arange(out_from, S, device=x.device)
        lag = t[:, None] - torch.arange(S, device=x.device)[None, :]  # [T_new, S]
        m = torch.where(lag >= 0, w[:, lag.clamp(min=0)], torch.zeros((), dtype=w.dtype, device=w.device))
        return torch.einsum("hts,bshd->bthd", m, x)
    if S < FFT_MIN_LEN:
        lag = torch.arange(S, device=x.device)[:, None] - torch.arange(S, device=x.device)[None, :]
        m = torch.where(lag >= 0, w[:, lag.clamp(min=0)], torch.zeros((), dtype=w.dtype, device=w.device))  # [H, S, S]
        return torch.einsum("hts,bshd->bthd", m, x)
    # Linear (not circular) convolution: zero-pad both to 2S before the FFT. FFT in float32 at least
    # (bf16 FFTs lose too much), float64 stays float64.
    n = 2 * S
    dtype = torch.promote_types(x.dtype, torch.float32)
    xf = torch.fft.rfft(x.to(dtype), n=n, dim=1)  # [B, n/2+1, H, D]
    wf = torch.fft.rfft(w.to(dtype), n=n, dim=1)  # [H, n/2+1]
    y = torch.fft.irfft(xf * wf.T[None, :, :, None], n=n, dim=1)[:, :S]
    return y.to(x.dtype)
