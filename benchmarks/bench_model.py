"""Model benchmark: training-step throughput of this GPT and its variants against a plain nanoGPT
baseline timed in the same run, Toeplitz mixer scaling and FFT threshold, generation speed, MFU.

    python benchmarks/bench_model.py [--quick] [--modes eager,compile,compile-fp32] [--steps N] [--repeats R]
                                     [--batch B] [--models gpt,...] [--profile] [--cold-compile]

Modes: `eager` is fp32 eager PyTorch (what trainables.train runs on a CPU by default); `compile` is
bf16 autocast + torch.compile of the model (the optimizer step stays eager, as in trainables.train);
`compile-fp32` is torch.compile without autocast, for CPUs without bf16 support (AVX2), where bf16 is
emulated and its timings are all matmul emulation.
A shared 2-core CPU is noisy, so absolute timings mean little: every number that matters is a ratio
against a reference measured in the same process, back to back with it (see Paired: each round times
every (reference, candidate) pair adjacently, order alternating, pairs rotated), and each ratio is the
median over rounds of the per-round ratio, printed with its range over rounds. Nothing here asserts on
a timing; the targets are printed as MET / NOT MET.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import math
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.model import GPT, GPTConfig, build_model, flops_per_token, toeplitz
from trainables.model.toeplitz import ToeplitzMixer, causal_conv

VOCAB, N_LAYER, N_EMBD, N_HEAD, SEQ_LEN = 4096, 4, 256, 4, 256
H100_BF16_PEAK = 989e12


# ----------------------------------------------------------------------------- the baseline: plain nanoGPT


class BaselineBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(n_embd, bias=False)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=False)
        self.ln_2 = nn.LayerNorm(n_embd, bias=False)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.mlp_proj = nn.Linear(4 * n_embd, n_embd, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class BaselineGPT(nn.Module):
    """nanoGPT's model.py without biases: learned positions, LayerNorm, GELU MLP 4x, SDPA causal
    attention, untied lm_head (to match GPTConfig's default). Same call signature as GPT for training."""

    def __init__(self, vocab_size: int, n_layer: int, n_embd: int, n_head: int, seq_len: int):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(seq_len, n_embd)
        self.h = nn.ModuleList([BaselineBlock(n_embd, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd, bias=False)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


# ----------------------------------------------------------------------------- the models compared


def gpt_config(**kw) -> GPTConfig:
    shape = dict(vocab_size=VOCAB, n_layer=N_LAYER, n_embd=N_EMBD, n_head=N_HEAD, seq_len=SEQ_LEN)
    return GPTConfig(**{**shape, **kw})


BASELINE = "baseline (nanoGPT)"
NANOGPT = "nanogpt flavour"
MODE_LABELS = {"eager": "fp32 eager", "compile": "bf16 + compile", "compile-fp32": "fp32 + compile"}
COMPILED = {"compile", "compile-fp32"}
VARIANTS = {  # name -> GPTConfig overrides; the baseline is built separately
    "gpt": {},
    "gpt+nanoheads": dict(nanohead_proportion=0.4, nanohead_dim=3),
    "gpt+softmax1": dict(softmax1=True),
    # arch="nanogpt", untied, no biases, no dropout: the baseline's maths through the project's model (softmax1_ab's)
    NANOGPT: dict(arch="nanogpt", qk_norm=False, logit_softcap=None),
    "toeplitz nomean_noproj": dict(mixer="toeplitz"),
    "toeplitz mean_noproj": dict(mixer="toeplitz", toep_mean=True),
    "toeplitz nomean_proj": dict(mixer="toeplitz", toep_proj=True),
    "toeplitz mean_proj": dict(mixer="toeplitz", toep_mean=True, toep_proj=True),
}


# --profile only: this GPT with its nanochat extras switched off by config, to locate an eager gap.
ABLATIONS = {
    "gpt no softcap": dict(logit_softcap=None),
    "gpt no qk_norm": dict(qk_norm=False),
    "gpt no softcap/qk_norm": dict(logit_softcap=None, qk_norm=False),
}


def build(name: str, device="cpu") -> nn.Module:
    torch.manual_seed(0)
    if name == BASELINE:
        return BaselineGPT(VOCAB, N_LAYER, N_EMBD, N_HEAD, SEQ_LEN).to(device)
    return build_model(gpt_config(**{**VARIANTS, **ABLATIONS}[name])).to(device)


# ----------------------------------------------------------------------------- timing helpers


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device="cpu") -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


class Paired:
    """Timings of named callables, measured as (reference, candidate) pairs back to back.

    Each round times every pair once, its two members adjacent (their order alternating between
    rounds, the pair order rotated). Two estimates of how many times faster b runs than a:
      ratio(a, b)  = best(a) / best(b), best = the fastest time seen over all rounds. Load from
                     elsewhere on the machine only ever slows a run down, so the fastest of many runs
                     is the least disturbed one: this is the estimate the printed checks use.
      paired(a, b) = median over rounds of t_a / t_b, both timed back to back, with its range.
    Where the two disagree by more than 10%, `noisy` is true: the machine was too busy to trust it."""

    def __init__(self, fns: dict, pairs: list[tuple], repeats: int, device="cpu", per_call: int | dict = 1):
        per_call = per_call if isinstance(per_call, dict) else {k: per_call for k in fns}
        self.times = {k: [] for k in fns}
        self.ratios = {p: [] for p in pairs}
        for r in range(repeats):
            j = r % len(pairs)
            for a, b in pairs[j:] + pairs[:j]:
                order = (a, b) if r % 2 == 0 else (b, a)
                t = {k: timed(fns[k], device) / per_call[k] for k in order}
                self.times[a].append(t[a])
                self.times[b].append(t[b])
                self.ratios[a, b].append(t[a] / t[b])

    def seconds(self, k) -> float:
        """The best (fastest) time of k, over every measurement of it."""
        return min(self.times[k])

    def ratio(self, a, b) -> float:
        return self.seconds(a) / self.seconds(b)

    def _per_round(self, a, b) -> list[float]:
        return self.ratios[a, b] if (a, b) in self.ratios else [1 / x for x in self.ratios[b, a]]

    def paired(self, a, b) -> float:
        return statistics.median(self._per_round(a, b))

    def noisy(self, a, b) -> bool:
        return abs(math.log(self.ratio(a, b) / self.paired(a, b))) > math.log(1.1)

    def describe(self, a, b) -> str:
        """'0.74x (paired 0.72x [0.65-0.80])', with ' NOISY' appended when the estimates disagree."""
        rs = self._per_round(a, b)
        return (
            f"{self.ratio(a, b):.2f}x (paired {self.paired(a, b):.2f}x [{min(rs):.2f}-{max(rs):.2f}])"
            f"{' NOISY' if self.noisy(a, b) else ''}"
        )


def calibrated(fns: dict, min_s: float) -> tuple[dict, dict]:
    """Wraps each (already warm) fn into a loop of n calls lasting about min_s, so that one measurement
    of a millisecond-scale function is not all timer and scheduler jitter. Returns (loops, n per key)."""
    n = {k: max(1, math.ceil(min_s / max(timed(fn), 1e-6))) for k, fn in fns.items()}
    return {k: (lambda fn=fn, m=n[k]: [fn() for _ in range(m)]) for k, fn in fns.items()}, n


def load_average() -> str:
    """The machine's 1-minute load average: above the core count, other work is competing for the CPU."""
    return f"; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores" if hasattr(os, "getloadavg") else ""


def fmt_rate(x: float) -> str:
    return f"{x / 1e3:,.2f}k" if x >= 1e3 else f"{x:,.1f}"


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


# ----------------------------------------------------------------------------- training-step throughput


def make_step(model: nn.Module, mode: str, batch: int, seq_len: int, vocab: int, device="cpu"):
    """One training step as trainables.train takes it: zero_grad, forward with targets, backward, AdamW."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, vocab, (batch, seq_len), generator=g).to(device)
    y = torch.randint(0, vocab, (batch, seq_len), generator=g).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=False)
    fwd = torch.compile(model) if mode in COMPILED else model
    dev = torch.device(device).type

    def amp():
        return torch.autocast(dev, dtype=torch.bfloat16) if mode == "compile" else contextlib.nullcontext()

    def step():
        opt.zero_grad(set_to_none=True)
        with amp():
            loss = fwd(x, y)
        loss.backward()
        opt.step()

    return step


def throughput(
    keys: list[tuple[str, str]],
    pairs: list[tuple],
    *,
    batch: int,
    steps: int,
    repeats: int,
    device="cpu",
    build_fn=build,
    seq_len=SEQ_LEN,
    vocab=VOCAB,
) -> tuple[Paired, dict]:
    """Builds and warms every (model name, mode) key, then times `steps` training steps per
    measurement, pair by pair (see Paired). Returns the timings and each key's first-step seconds."""
    runs, first = {}, {}
    for name, mode in keys:
        step = make_step(build_fn(name, device), mode, batch, seq_len, vocab, device)
        first[name, mode] = timed(step, device)  # in compile mode: compiles the forward and backward graphs
        step()  # one more warm-up step (allocator, AdamW state)
        runs[name, mode] = lambda step=step: [step() for _ in range(steps)]
        print(f"  warmed up {name} [{mode}]: first step {first[name, mode]:.1f} s", file=sys.stderr, flush=True)
    return Paired(runs, pairs, repeats, device, per_call=steps), first


def print_throughput(t: Paired, first: dict, names: list[str], modes: list[str], batch: int):
    tokens = batch * SEQ_LEN
    print(
        f"\n## Training step throughput (batch {batch} x seq {SEQ_LEN} = {tokens} tokens/step; "
        f"zero_grad + forward + backward + AdamW; each the fastest of >= {min(map(len, t.times.values()))} measurements)"
    )
    print(
        f"{'model':24s} {'mode':15s} {'tokens/s':>9s}  {'vs baseline (paired median [range over rounds])':48s} {'compile s':>9s}"
    )
    for mode in modes:
        label = MODE_LABELS[mode]
        base = (BASELINE, mode)
        for name in (n for n in names if (n, mode) in t.times):
            k = (name, mode)
            vs = t.describe(base, k) if k != base else "1.00x"
            comp = f"{max(first[k] - t.seconds(k), 0):.1f}" if mode in COMPILED else "-"
            print(f"{name:24s} {label:15s} {fmt_rate(tokens / t.seconds(k)):>9s}  {vs:48s} {comp:>9s}")
    if COMPILED & set(modes):
        print(
            "  compile s = first step minus the best step: dynamo + inductor, forward and backward graphs, after any "
            "hits in the on-disk inductor cache (a first-ever run pays more: see --cold-compile)"
        )


def print_headlines(t: Paired, modes: list[str], batch: int):
    print("\n## Headline checks (printed, not asserted; best-of-rounds ratio, paired median [range] as a cross-check)")
    for mode in modes:
        base, gpt = (BASELINE, mode), ("gpt", mode)
        if (base, gpt) in t.ratios:
            print(
                f"  this GPT vs baseline [{mode}]: {t.describe(base, gpt)}; "
                f"target >= 1.0: {verdict(t.ratio(base, gpt) >= 1.0)}"
            )
    for mode in modes:
        base, flavour = (BASELINE, mode), (NANOGPT, mode)
        if (base, flavour) in t.ratios:  # the same maths: only the implementation can differ
            print(
                f"  nanogpt flavour vs baseline [{mode}]: {t.describe(base, flavour)}; "
                f"target >= 1.0: {verdict(t.ratio(base, flavour) >= 1.0)}"
            )
    e, c = ("gpt", "eager"), ("gpt", "compile")
    if (e, c) in t.ratios:
        rate = lambda k: fmt_rate(batch * SEQ_LEN / t.seconds(k))
        print(
            f"  this GPT bf16+compile vs fp32 eager: {rate(c)} vs {rate(e)} tokens/s = {t.describe(e, c)}; "
            f"target >= 2.5x: {verdict(t.ratio(e, c) >= 2.5)}"
        )
    be, bc = (BASELINE, "eager"), (BASELINE, "compile")
    if (be, bc) in t.ratios:
        print(
            f"  (baseline bf16+compile vs fp32 eager: {t.describe(be, bc)}; "
            f"reference on this machine ~15.7k vs 5.3k tokens/s = 2.96x)"
        )
    for mode in modes:
        gpt, s1 = ("gpt", mode), ("gpt+softmax1", mode)
        if (gpt, s1) in t.ratios:
            print(
                f"  softmax1 vs softmax [{mode}]: {t.describe(gpt, s1)} the throughput; "
                f"target within 10%: {verdict(abs(t.ratio(gpt, s1) - 1) <= 0.10)}"
            )
    if any(t.noisy(a, b) for a, b in t.ratios):
        print("  NOISY: some best-of and paired estimates disagree by > 10%: the machine was busy; rerun it quiet.")


def print_mfu(t: Paired, modes: list[str], batch: int):
    fpt = flops_per_token(gpt_config())
    # Nominal fp32 peak as trainables.train computes it: threads x 2 AVX-512 FMA units x 16 lanes x 2 x 2.5 GHz.
    cpu_peak = torch.get_num_threads() * 2 * 16 * 2 * 2.5e9
    print(f"\n## MFU (this GPT; flops_per_token = {fpt / 1e6:.2f} MFLOP, forward + backward)")
    for mode in modes:
        if ("gpt", mode) in t.times:
            achieved = batch * SEQ_LEN / t.seconds(("gpt", mode)) * fpt
            note = (
                f"; {achieved / cpu_peak:.1%} of a nominal {cpu_peak / 1e9:.0f} GFLOP/s fp32 peak"
                if mode != "compile"
                else " (bf16 on AMX: no nominal peak is used here)"
            )
            print(f"  [{mode}] {achieved / 1e9:.1f} GFLOP/s achieved{note}")
    if not torch.cuda.is_available():
        print("  MFU at the gpu profile's model size needs a GPU (torch.cuda.is_available() is False): not measured.")


def gpu_mfu(steps: int, repeats: int, device="cuda"):
    """The gpu profile's model (study/profiles.py: 5e7 params, seq 1024, batch 32, vocab 32768), bf16 + compile,
    this GPT and the nanoGPT baseline of the same depth/width, MFU against the H100's dense bf16 peak."""
    from study.profiles import PROFILES
    from trainables.model import solve_architecture

    p = PROFILES["gpu"]
    vocab = int(p.tokenizer.split(":")[1])
    best = solve_architecture(p.budget, vocab, p.head_dim, aspect_ratio=p.aspect_ratio, seq_len=p.seq_len)[0]
    cfg = best.config(seq_len=p.seq_len)
    where = torch.cuda.get_device_name() if device == "cuda" else device
    print(
        f"\n## GPU MFU on {where}: gpu profile model n_layer={cfg.n_layer} n_embd={cfg.n_embd} n_head={cfg.n_head} "
        f"vocab={vocab} seq={p.seq_len}, batch {p.batch_size}, bf16 + compile; "
        f"peak {H100_BF16_PEAK / 1e12:.0f} TFLOP/s (H100 bf16 dense)"
    )

    def build_gpu(name, device):
        torch.manual_seed(0)
        if name == BASELINE:
            return BaselineGPT(vocab, cfg.n_layer, cfg.n_embd, cfg.n_head, p.seq_len).to(device)
        return GPT(cfg).to(device)

    base, gpt = (BASELINE, "compile"), ("gpt", "compile")
    t, first = throughput(
        [base, gpt],
        [(base, gpt)],
        batch=p.batch_size,
        steps=steps,
        repeats=repeats,
        device=device,
        build_fn=build_gpu,
        seq_len=p.seq_len,
        vocab=vocab,
    )
    fpt = flops_per_token(cfg)
    for k in (base, gpt):
        tok_s = p.batch_size * p.seq_len / t.seconds(k)
        mfu = f"MFU {tok_s * fpt / H100_BF16_PEAK:.1%}" if k == gpt else ""
        vs = t.describe(base, k) if k != base else "1.00x"
        print(
            f"  {k[0]:20s} {fmt_rate(tok_s):>9s} tokens/s  vs baseline {vs}  "
            f"compile {max(first[k] - t.seconds(k), 0):.1f} s  {mfu}"
        )


# ----------------------------------------------------------------------------- Toeplitz: scaling and FFT threshold


@contextlib.contextmanager
def fft_min_len(value: int | None):
    """Temporarily sets toeplitz.FFT_MIN_LEN (causal_conv reads it at call time); None leaves it."""
    old = toeplitz.FFT_MIN_LEN
    toeplitz.FFT_MIN_LEN = old if value is None else value
    try:
        yield
    finally:
        toeplitz.FFT_MIN_LEN = old


DENSE, FFT = 10**9, 1  # FFT_MIN_LEN values that force the dense matmul / the FFT


def fit_exponent(xs, ys) -> float:
    """Least-squares slope of log(y) against log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def toeplitz_scaling(lengths: list[int], dense_max: int, batch: int, repeats: int):
    """Forward + backward of one ToeplitzMixer (parallel path, no projections: the mixing alone)."""
    mixer = ToeplitzMixer(
        GPTConfig(vocab_size=VOCAB, n_layer=1, n_embd=N_EMBD, n_head=N_HEAD, seq_len=max(lengths), mixer="toeplitz")
    )
    g = torch.Generator().manual_seed(0)
    inputs = {
        S: (torch.randn(batch, S, N_EMBD, generator=g, requires_grad=True), torch.randn(batch, S, N_EMBD, generator=g))
        for S in lengths
    }

    def fwd_bwd(S, forced=None):
        x, gy = inputs[S]

        def run():
            with fft_min_len(forced):
                x.grad, mixer.raw.grad = None, None
                mixer(x).backward(gy)

        return run

    s0 = lengths[0]
    fns = {("default", S): fwd_bwd(S) for S in lengths}
    fns |= {("dense", S): fwd_bwd(S, DENSE) for S in lengths if S <= dense_max}
    pairs = [(("default", s0), ("default", S)) for S in lengths[1:]]
    pairs += [(("default", S), ("dense", S)) for S in lengths if S <= dense_max and S >= toeplitz.FFT_MIN_LEN]
    pairs += [(("dense", s0), ("dense", S)) for S in lengths[1:] if S <= dense_max]
    for fn in fns.values():
        fn()
    loops, n = calibrated(fns, 0.05)
    t = Paired(loops, pairs, repeats, per_call=n)
    print(
        f"\n## Toeplitz mixer scaling: one ToeplitzMixer forward + backward, parallel path, batch {batch}, "
        f"width {N_EMBD}, {N_HEAD} heads, no projections, fp32 (FFT_MIN_LEN = {toeplitz.FFT_MIN_LEN})"
    )
    print(
        f"{'seq':>6s} {'path':>6s} {'ms':>9s} {'time/time@' + str(s0):>14s} {'(seq/' + str(s0) + ')^2':>12s} "
        f"{'forced dense ms':>16s} {'dense time/time@' + str(s0):>21s}"
    )
    growth = {S: 1.0 if S == s0 else 1 / t.ratio(("default", s0), ("default", S)) for S in lengths}
    dense_growth = {
        S: 1.0 if S == s0 else 1 / t.ratio(("dense", s0), ("dense", S)) for S in lengths if ("dense", S) in fns
    }
    for S in lengths:
        path = "fft" if S >= toeplitz.FFT_MIN_LEN else "dense"
        dense = (
            f"{t.seconds(('dense', S)) * 1e3:16.2f} {dense_growth[S]:20.2f}x"
            if S in dense_growth
            else f"{'-':>16s} {'-':>21s}"
        )
        noisy = S != s0 and t.noisy(("default", s0), ("default", S))
        print(
            f"{S:6d} {path:>6s} {t.seconds(('default', S)) * 1e3:9.2f} {growth[S]:13.2f}x {(S / s0) ** 2:11.0f}x "
            f"{dense}{'  NOISY' if noisy else ''}"
        )
    e_all = fit_exponent(lengths, [growth[S] for S in lengths])
    line = f"  fitted exponent (log time vs log seq), default path, seq {s0}..{lengths[-1]}: {e_all:.2f}"
    fft_lens = [S for S in lengths if S >= toeplitz.FFT_MIN_LEN]
    if len(fft_lens) >= 2:
        line += f"; FFT lengths only ({fft_lens[0]}..{fft_lens[-1]}): {fit_exponent(fft_lens, [growth[S] for S in fft_lens]):.2f}"
    if len(dense_growth) >= 2:
        ds = sorted(dense_growth)
        line += f"; forced dense ({ds[0]}..{ds[-1]}): {fit_exponent(ds, [dense_growth[S] for S in ds]):.2f}"
    print(line)
    print(f"  clearly sub-quadratic (exponent <= 1.5 over seq {s0}..{lengths[-1]}): {verdict(e_all <= 1.5)}")


def fft_threshold(lengths: list[int], batch: int, repeats: int):
    """causal_conv dense (Toeplitz matmul) vs FFT at the training shape [batch, S, heads, head_dim]."""
    H, D = N_HEAD, N_EMBD // N_HEAD
    g = torch.Generator().manual_seed(0)
    fns, pairs = {}, []
    for S in lengths:
        x = torch.randn(batch, S, H, D, generator=g, requires_grad=True)
        w = (torch.rand(H, S, generator=g) / S).requires_grad_()
        gy = torch.randn(batch, S, H, D, generator=g)
        for path, forced in (("dense", DENSE), ("fft", FFT)):

            def fwd(x=x, w=w, forced=forced):
                with fft_min_len(forced), torch.no_grad():
                    causal_conv(x, w)

            def fwd_bwd(x=x, w=w, gy=gy, forced=forced):
                with fft_min_len(forced):
                    x.grad, w.grad = None, None
                    causal_conv(x, w).backward(gy)

            fns[path, "fwd", S], fns[path, "fwd+bwd", S] = fwd, fwd_bwd
        pairs += [(("dense", kind, S), ("fft", kind, S)) for kind in ("fwd", "fwd+bwd")]
    for fn in fns.values():
        fn()
    loops, n = calibrated(fns, 0.05)
    t = Paired(loops, pairs, repeats, per_call=n)
    print(
        f"\n## FFT threshold: causal_conv dense Toeplitz matmul vs FFT, x [{batch}, S, {H}, {D}] fp32, "
        f"w [{H}, S] (current FFT_MIN_LEN = {toeplitz.FFT_MIN_LEN})"
    )
    print(
        f"{'seq':>6s} {'dense fwd ms':>13s} {'fft fwd ms':>11s} {'dense/fft':>10s} {'dense f+b ms':>13s} "
        f"{'fft f+b ms':>11s} {'dense/fft':>10s}  faster for training"
    )
    for S in lengths:
        ms = {k: t.seconds(k) * 1e3 for k in fns if k[2] == S}
        rf, rb = (
            t.ratio(("dense", "fwd", S), ("fft", "fwd", S)),
            t.ratio(("dense", "fwd+bwd", S), ("fft", "fwd+bwd", S)),
        )
        noisy = any(t.noisy(("dense", kind, S), ("fft", kind, S)) for kind in ("fwd", "fwd+bwd"))
        print(
            f"{S:6d} {ms['dense', 'fwd', S]:13.2f} {ms['fft', 'fwd', S]:11.2f} {rf:9.2f}x "
            f"{ms['dense', 'fwd+bwd', S]:13.2f} {ms['fft', 'fwd+bwd', S]:11.2f} {rb:9.2f}x  {'fft' if rb > 1 else 'dense'}"
            f"{'  NOISY' if noisy else ''}"
        )
    print("  (dense/fft > 1: the FFT is faster; FFT_MIN_LEN belongs where the f+b ratio crosses 1)")


# ----------------------------------------------------------------------------- generation


def generation(batch: int, prompt: int, new_tokens: int, repeats: int):
    attn, toep = "attention (gpt)", "toeplitz mean_proj"
    models = {attn: GPT(gpt_config()).eval(), toep: GPT(gpt_config(**VARIANTS[toep])).eval()}
    idx = torch.randint(0, VOCAB, (batch, prompt), generator=torch.Generator().manual_seed(0))
    fns = {
        (n, p): (lambda m=m, p=p: m.generate(idx, new_tokens, temperature=0, mixer_path=p))
        for n, m in models.items()
        for p in ("parallel", "sequential")
    }
    base = (attn, "parallel")
    pairs = [
        (base, (attn, "sequential")),
        (base, (toep, "parallel")),
        (base, (toep, "sequential")),
        ((toep, "sequential"), (toep, "parallel")),
    ]
    for fn in fns.values():
        fn()
    t = Paired(fns, pairs, repeats)
    print(
        f"\n## Generation: model.generate(idx, {new_tokens}, temperature=0), batch {batch}, prompt {prompt} tokens, "
        f"fp32 eager, KV / mixer-input cache"
    )
    print(
        f"{'model':20s} {'mixer_path':>11s} {'tokens/s':>9s} {'vs attention parallel':>22s} {'parallel vs sequential':>23s}"
    )
    for n, p in fns:
        k = (n, p)
        vs = f"{t.ratio(base, k) if k != base else 1:.2f}x"
        speedup = f"{t.ratio((n, 'sequential'), k):.2f}x" if p == "parallel" else ""
        print(f"{n:20s} {p:>11s} {fmt_rate(batch * new_tokens / t.seconds(k)):>9s} {vs:>22s} {speedup:>23s}")
    print("  (attention ignores mixer_path: its two rows run the same code, so their ratio shows the noise level)")


# ----------------------------------------------------------------------------- profile (evidence for an eager gap)


def profile_eager(batch: int, steps: int, repeats: int, rows: int = 20):
    """Where an fp32 eager gap between this GPT and the baseline goes: top ops, then config ablations."""
    from torch.profiler import ProfilerActivity, profile

    print(f"\n## torch.profiler, fp32 eager, 3 training steps each, batch {batch}: top ops by self CPU time")
    for name in (BASELINE, "gpt"):
        step = make_step(build(name), "eager", batch, SEQ_LEN, VOCAB)
        step(), step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step()
        print(f"\n### {name}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48))

    gpt, base = ("gpt", "eager"), (BASELINE, "eager")
    keys = [base, gpt] + [(n, "eager") for n in ABLATIONS]
    pairs = [(base, gpt)] + [(gpt, (n, "eager")) for n in ABLATIONS] + [(base, (n, "eager")) for n in ABLATIONS]
    t, _ = throughput(keys, pairs, batch=batch, steps=steps, repeats=repeats)
    print(f"\n## fp32 eager ablation of this GPT by config (batch {batch}; best-of ratio, paired median [range])")
    print(f"{'model':24s} {'tokens/s':>9s}  {'vs gpt':40s} {'vs baseline':40s}")
    for k in keys:
        vs_gpt = t.describe(gpt, k) if k not in (gpt, base) else ""
        vs_base = t.describe(base, k) if k != base else "1.00x"
        print(f"{k[0]:24s} {fmt_rate(batch * SEQ_LEN / t.seconds(k)):>9s}  {vs_gpt:40s} {vs_base:40s}")


def profile_compiled(mode: str, batch: int, repeats: int, rows: int = 25):
    """Where a compile-mode gap goes: inductor's generated kernels (named by the ops they fuse), the extern calls
    (mm, SDPA) and any eager code, by self CPU time of one training step: each model's steps profiled in turn,
    alternating, and each op's median over the rounds (a busy machine disturbs some steps, not the median)."""
    from torch.profiler import ProfilerActivity, profile

    torch._inductor.config.cpp.enable_kernel_profile = True  # each generated C++ kernel a profiler event
    torch._dynamo.reset()  # recompile, so that the kernels carry the profiling calls
    names = [BASELINE, "gpt"]
    steps = {n: make_step(build(n), mode, batch, SEQ_LEN, VOCAB) for n in names}
    ms = {n: {} for n in names}
    for step in steps.values():
        step(), step()
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                steps[n]()
            for e in prof.key_averages():
                ms[n].setdefault(e.key, []).append(e.self_cpu_time_total / 1e3)
    print(
        f"\n## torch.profiler, {MODE_LABELS[mode]}, batch {batch}: self CPU ms per training step, median of {repeats}"
    )
    for n in names:
        top = sorted(((statistics.median(v), k) for k, v in ms[n].items()), reverse=True)
        print(f"\n### {n} [{mode}]: sum {sum(m for m, _ in top):.1f} ms")
        for m, k in top[:rows]:
            print(f"  {m:8.2f}  {k[:90]}")
    torch._inductor.config.cpp.enable_kernel_profile = False
    torch._dynamo.reset()


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: fewer rounds, shorter generation, compile mode for baseline, gpt and the nanogpt flavour only",
    )
    ap.add_argument(
        "--modes",
        default="eager,compile",
        help="comma-separated: eager (fp32), compile (bf16 autocast + torch.compile), compile-fp32",
    )
    ap.add_argument("--steps", type=int, default=None, help="training steps per timed measurement (default 1)")
    ap.add_argument("--repeats", type=int, default=None, help="rounds of back-to-back pairs (default 9; quick 3)")
    ap.add_argument("--batch", type=int, default=8, help="sequences per training step (default 8)")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also profile baseline vs gpt in each mode (top ops; compile modes: inductor's kernels) and, in fp32 eager, "
        "ablate its softcap / qk_norm",
    )
    ap.add_argument(
        "--models",
        default=None,
        help="comma-separated model names: time only the baseline and these (e.g. gpt), and skip the "
        "Toeplitz, FFT and generation sections",
    )
    ap.add_argument(
        "--cold-compile", action="store_true", help="compile into a fresh inductor cache (first-run compile times)"
    )
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODE_LABELS for m in modes):
        print(
            f"bench_model: --modes={args.modes!r}: must be a comma-separated subset of {','.join(MODE_LABELS)}",
            file=sys.stderr,
        )
        sys.exit(2)
    steps = args.steps or 1
    repeats = args.repeats or (3 if args.quick else 9)
    if min(steps, repeats, args.batch) < 1:
        print("bench_model: --steps, --repeats and --batch must be >= 1", file=sys.stderr)
        sys.exit(2)
    if args.cold_compile:  # inductor reads the variable when it first compiles; the directory goes at exit
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_model_inductor_")
        atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
    # Every GPT variant compiles GPT.forward once more (its config changes the graph): lift dynamo's limit.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)

    t_start = time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}{load_average()}; {steps} step(s) per measurement, {repeats} rounds"
        f"{' (quick)' if args.quick else ''}"
    )

    names = [BASELINE, *VARIANTS]
    compiled = (
        [BASELINE, "gpt", NANOGPT] if args.quick else names
    )  # quick: each compile costs tens of seconds on 2 cores
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        if any(m not in VARIANTS for m in wanted):
            print(
                f"bench_model: --models={args.models!r}: must be a comma-separated subset of {','.join(VARIANTS)}",
                file=sys.stderr,
            )
            sys.exit(2)
        names = compiled = [BASELINE, *wanted]
    keys = [(n, m) for m in modes for n in (compiled if m in COMPILED else names)]
    pairs = [((BASELINE, m), (n, m)) for n, m in keys if n != BASELINE]
    pairs += [(("gpt", m), ("gpt+softmax1", m)) for m in modes if ("gpt+softmax1", m) in keys]
    if "eager" in modes and "compile" in modes:
        pairs += [((n, "eager"), (n, "compile")) for n in (BASELINE, "gpt")]
    t, first = throughput(keys, pairs, batch=args.batch, steps=steps, repeats=repeats)
    print_throughput(t, first, names, modes, args.batch)
    print_headlines(t, modes, args.batch)
    print_mfu(t, modes, args.batch)
    if torch.cuda.is_available():
        gpu_mfu(steps=steps * 3, repeats=repeats)

    if args.models:
        pass  # the sections below are about other models
    elif args.quick:
        toeplitz_scaling([256, 512, 1024, 2048, 4096], dense_max=1024, batch=1, repeats=5)
        fft_threshold([128, 256, 512, 1024], batch=args.batch, repeats=5)
        generation(batch=4, prompt=16, new_tokens=16, repeats=3)
    else:
        toeplitz_scaling([256, 512, 1024, 2048, 4096], dense_max=2048, batch=2, repeats=7)
        fft_threshold([128, 256, 512, 1024, 2048], batch=args.batch, repeats=7)
        generation(batch=4, prompt=16, new_tokens=64, repeats=5)
    if args.profile:
        for mode in (m for m in modes if m in COMPILED):
            profile_compiled(mode, args.batch, repeats)
        if "eager" in modes:
            profile_eager(args.batch, steps, repeats)
    print(f"\ntotal benchmark wall time {time.perf_counter() - t_start:.0f} s{load_average()}")


if __name__ == "__main__":
    main()
