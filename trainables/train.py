"""One worker's training loop: plain PyTorch, DDP-aware, runnable without Ray.

    python -m trainables.train --config trial.json [--out DIR]

trains one model in one process. Under Ray Train (trainables/tune.py) the same `train()` runs in
every worker, with `report` sending metrics and checkpoints to Ray and `restore` pointing at the
checkpoint to resume from.

A trial config is a flat dict of plain values (so Tune and Optuna can search it): GPTConfig fields,
TrainConfig fields, plus `budget` (target parameter count) which makes the solver choose
n_layer/n_embd/n_head. Everything is validated before any training starts.
"""

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import torch.distributed as dist

from trainables.data import TokenLoader, evaluate_bpb, prepare_tokens
from trainables.model import GPT, GPTConfig, build_model, count_params, flops_per_token
from trainables.model.params import size_model
from trainables.storage import read_jsonl, write_atomic
from trainables.timeline import mark, span

SCHEDULES = ("cosine", "linear")
OPTIMIZERS = ("adamw", "muon")
DTYPES = ("auto", "float32", "bfloat16")
SHAPE_RULES = ("solver", "nanochat")
WD_SCHEDULES = ("constant", "linear")
MUON_ADJUST_LR = ("match_rms_adamw", "original")


@dataclass(kw_only=True)
class TrainConfig:
    corpus: str = "wiki"
    tokenizer: str = "bpe:4096"  # gpt2 | cl100k_base | o200k_base | bpe:VOCAB (trained on the corpus)
    seed: int = 0
    # The two sources of randomness, apart: init_seed the weights, dropout and every global RNG; data_seed the
    # loader's batch order and the samples' draws. None: the trial's seed (resolved here, so config.json records
    # the seed each one used). Arms with one data_seed train on the same batches: their difference pairs.
    init_seed: int | None = None
    data_seed: int | None = None
    # Model size from a parameter budget: the solver picks depth/width (head_dim wide heads) nearest
    # `budget` with width/depth closest to `aspect_ratio`. None: take n_layer/n_embd/n_head as given.
    budget: float | None = None
    head_dim: int = 64
    aspect_ratio: float = 64.0
    # "solver": any depth, any width that is a multiple of head_dim (solve_architecture); "nanochat": the width follows
    # the depth as in nanochat's base_train (depth x aspect_ratio rounded up to head_dim), the depth nearest the budget.
    shape_rule: str = "solver"
    # Batch: `batch_size` sequences per micro-step per worker; gradients accumulate up to
    # `total_batch_tokens` per optimizer step over all workers (None: one micro-step).
    batch_size: int = 8
    total_batch_tokens: int | None = None
    max_steps: int = 200
    max_tokens: int | None = None  # when set, max_steps = max_tokens / tokens per step
    max_epochs: float = 4.0  # study.run refuses a plan over this many passes of the corpus' train split
    # Optimizer: per-group learning rates as in nanochat (matrices / embedding / lm_head).
    optimizer: str = "adamw"  # adamw | muon (Muon on the blocks' 2-D matrices, AdamW elsewhere)
    lr: float = 3e-3  # the blocks' matrices
    embedding_lr: float | None = None  # None: 10 x lr (the embedding is normalised right after lookup)
    lm_head_lr: float | None = None  # None: lr
    weight_decay: float = 0.0
    wd_schedule: str = "constant"  # constant | linear: the matrices' decay falls linearly to 0 at max_steps (nanochat)
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8  # nanochat: 1e-10
    # Muon's lr per matrix [rows, cols]: "match_rms_adamw" lr x 0.2 sqrt(max(rows, cols)), so lr reads as an AdamW lr;
    # "original" lr x sqrt(max(1, rows / cols)), Keller Jordan's and nanochat's (its matrix lr is 0.02).
    muon_adjust_lr: str = "match_rms_adamw"
    muon_momentum_warmup: int = 0  # steps over which Muon's momentum rises linearly from 0.85 to 0.95 (nanochat: 300)
    warmup_steps: int = 20
    schedule: str = "cosine"  # cosine to min_lr_frac, or linear: constant then warmdown_frac to min_lr_frac
    warmdown_frac: float = 0.2
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0  # 0 disables
    dtype: str = "auto"  # auto: bf16 autocast on CUDA with bf16, fp32 otherwise
    compile: bool = False
    eval_every: int = 50  # steps between evals (and checkpoints); a final eval always runs
    eval_batches: int = 8
    checkpoint: bool = True
    sample_tokens: int = 0  # >0: write samples.json with samples of this many tokens at the end
    gen_benchmark_tokens: int = (
        0  # >0: time generate() of this many tokens: heads parallel vs sequential, cached vs not
    )
    gen_benchmark_runs: int = 3
    gen_benchmark_batch: int = 4
    probes: bool = True  # run trainables.probes on the final model (a few val batches)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps (study.run checks it exists on a local run)

    def __post_init__(self):
        _check(self.schedule in SCHEDULES, "schedule", self.schedule, f"one of {', '.join(SCHEDULES)}")
        _check(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        _check(self.dtype in DTYPES, "dtype", self.dtype, f"one of {', '.join(DTYPES)}")
        _check(self.shape_rule in SHAPE_RULES, "shape_rule", self.shape_rule, f"one of {', '.join(SHAPE_RULES)}")
        _check(
            self.shape_rule == "solver" or self.budget is not None,
            "shape_rule",
            self.shape_rule,
            "'solver' here: nanochat's rule picks the depth nearest a budget, and no budget reaches it (dims given, "
            "or sized by the study's own rule)",
        )
        _check(self.wd_schedule in WD_SCHEDULES, "wd_schedule", self.wd_schedule, f"one of {', '.join(WD_SCHEDULES)}")
        _check(
            self.muon_adjust_lr in MUON_ADJUST_LR,
            "muon_adjust_lr",
            self.muon_adjust_lr,
            f"one of {', '.join(MUON_ADJUST_LR)}",
        )

        def integer(value, low):
            return isinstance(value, int) and not isinstance(value, bool) and value >= low

        def number(value):  # finite: `--set lr=1e999` parses as inf, and nan fails no comparison loudly
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        for name in (
            "batch_size",
            "max_steps",
            "eval_every",
            "eval_batches",
            "head_dim",
            "gen_benchmark_runs",
            "gen_benchmark_batch",
        ):
            _check(integer(getattr(self, name), 1), name, getattr(self, name), "an integer >= 1")
        for name in ("warmup_steps", "sample_tokens", "gen_benchmark_tokens", "muon_momentum_warmup"):  # 0: none (off)
            _check(integer(getattr(self, name), 0), name, getattr(self, name), "an integer >= 0")
        for name in ("total_batch_tokens", "max_tokens"):
            _check(
                getattr(self, name) is None or integer(getattr(self, name), 1),
                name,
                getattr(self, name),
                "None or an integer >= 1",
            )
        _check(
            integer(self.seed, 0) and self.seed < 2**32,
            "seed",
            self.seed,
            "an integer in [0, 2**32) (numpy's seed range)",
        )
        for name in ("init_seed", "data_seed"):
            value = getattr(self, name)
            _check(
                value is None or (integer(value, 0) and value < 2**32),
                name,
                value,
                "None (the trial's seed) or an integer in [0, 2**32) (numpy's seed range)",
            )
            setattr(self, name, self.seed if value is None else value)
        _check(
            number(self.max_epochs) and self.max_epochs > 0,
            "max_epochs",
            self.max_epochs,
            "a finite number > 0 (passes over the corpus' train split a plan may make)",
        )
        _check(number(self.lr) and self.lr > 0, "lr", self.lr, "a finite number > 0")
        for name in ("embedding_lr", "lm_head_lr"):
            _check(
                getattr(self, name) is None or (number(getattr(self, name)) and getattr(self, name) > 0),
                name,
                getattr(self, name),
                "None (the default from lr) or a finite number > 0",
            )
        for name in ("weight_decay", "grad_clip"):
            _check(
                number(getattr(self, name)) and getattr(self, name) >= 0,
                name,
                getattr(self, name),
                "a finite number >= 0",
            )
        for name in ("beta1", "beta2"):
            _check(
                number(getattr(self, name)) and 0 <= getattr(self, name) < 1,
                name,
                getattr(self, name),
                "a number in [0, 1)",
            )
        _check(number(self.adam_eps) and self.adam_eps > 0, "adam_eps", self.adam_eps, "a finite number > 0")
        _check(
            number(self.min_lr_frac) and 0 <= self.min_lr_frac <= 1,
            "min_lr_frac",
            self.min_lr_frac,
            "a number in [0, 1]",
        )
        _check(
            number(self.warmdown_frac) and 0 < self.warmdown_frac <= 1,
            "warmdown_frac",
            self.warmdown_frac,
            "a number in (0, 1]",
        )
        _check(
            self.budget is None or (number(self.budget) and self.budget > 0),
            "budget",
            self.budget,
            "None or a finite positive parameter count",
        )
        _check(
            number(self.aspect_ratio) and self.aspect_ratio > 0,
            "aspect_ratio",
            self.aspect_ratio,
            "a finite number > 0 (width / depth)",
        )
        index = (
            self.device[len("cuda:") :] if isinstance(self.device, str) and self.device.startswith("cuda:") else None
        )
        _check(
            self.device in ("auto", "cpu", "cuda", "mps")
            or (index is not None and index.isascii() and index.isdigit()),
            "device",
            self.device,
            "auto, cpu, cuda, cuda:N or mps",
        )

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _check(ok, name, value, allowed):
    if not ok:
        raise ValueError(f"TrainConfig.{name}={value!r}: must be {allowed}")


def resolve_configs(config: dict, vocab_size: int) -> tuple[GPTConfig, TrainConfig]:
    """Trial config -> (GPTConfig, TrainConfig). The vocab comes from the tokenizer; a budget goes through the solver."""
    tc = TrainConfig.from_dict(config)
    model_keys = {k: v for k, v in config.items() if k in {f.name for f in fields(GPTConfig)}}
    model_keys["vocab_size"] = vocab_size
    if tc.budget is not None:
        dims = ("vocab_size", "n_layer", "n_embd", "n_head")
        best = size_model(
            tc.budget,
            vocab_size,
            tc.head_dim,
            aspect_ratio=tc.aspect_ratio,
            shape_rule=tc.shape_rule,
            **{k: v for k, v in model_keys.items() if k not in dims},
        )
        model_keys.update(n_layer=best.n_layer, n_embd=best.n_embd, n_head=best.n_head)
    return GPTConfig(**model_keys), tc


# ----------------------------------------------------------------------------- devices and precision

# Dense peak FLOP/s used for MFU, by device kind. CPU: cores x 2 AVX-512 FMA units x 16 fp32 lanes x 2 x 2.5 GHz
# (a nominal figure; set NANOSTUDIES_PEAK_FLOPS for your machine).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12, "L40S": 362e12}


def peak_flops(device: torch.device) -> float:
    if os.environ.get("NANOSTUDIES_PEAK_FLOPS"):
        return float(os.environ["NANOSTUDIES_PEAK_FLOPS"])
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in PEAK_FLOPS.items() if k in name), 312e12)
    return torch.get_num_threads() * 2 * 16 * 2 * 2.5e9


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def autocast_dtype(tc: TrainConfig, device: torch.device) -> torch.dtype | None:
    if tc.dtype == "bfloat16":
        return torch.bfloat16
    if tc.dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class Worker:
    """This process's place in the run: its rank among `world` DDP ranks, its device and its autocast dtype."""

    ddp: bool
    rank: int
    world: int
    device: torch.device
    amp_dtype: torch.dtype | None

    @classmethod
    def current(cls, tc: TrainConfig) -> "Worker":
        # One Ray Train worker has a process group of one: DDP would only add its hooks and a no-op all-reduce.
        ddp = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
        device = pick_device(tc.device)
        return cls(ddp=ddp, rank=rank, world=world, device=device, amp_dtype=autocast_dtype(tc, device))

    def autocast(self):
        """The training's autocast: to amp_dtype, or explicitly off (fp32)."""
        if self.amp_dtype:
            return torch.autocast(self.device.type, dtype=self.amp_dtype)
        return torch.autocast(self.device.type, enabled=False)


# ----------------------------------------------------------------------------- optimizer and schedule


def build_optimizers(model: GPT, tc: TrainConfig) -> list[torch.optim.Optimizer]:
    """nanochat-style groups: the embedding (and nanoGPT's position table), the lm_head, the blocks' matrices,
    every other param (Toeplitz filters; nanoGPT's LayerNorms and biases). With Muon, the blocks' matrices go
    to Muon and the rest to AdamW. arch="nanogpt" decays the embeddings and the lm_head at weight_decay too,
    as nanoGPT's configure_optimizers decays every 2-D tensor; nanochat decays none of them."""
    tables = [m.weight for m in model.transformer.values() if isinstance(m, torch.nn.Embedding)]  # wte (, wpe)
    head = model.lm_head.weight
    matrices, others = [], []
    for module in (
        model.transformer.h.modules()
    ):  # Linear weights are the matrices; the rest (biases, norms, Toeplitz filters) are not
        for name, p in module.named_parameters(recurse=False):
            (matrices if isinstance(module, torch.nn.Linear) and name == "weight" else others).append(p)
    grouped = {id(p) for p in [*tables, head, *matrices, *others]}
    others += [p for p in model.parameters() if id(p) not in grouped]  # nanoGPT's final LayerNorm
    table_decay = tc.weight_decay if model.cfg.arch == "nanogpt" else 0.0
    embedding_lr, lm_head_lr = table_lrs(tc)
    inputs = [t for t in tables if t is not head]  # a tied wte is the lm_head, at the lm_head's lr (table_lrs)
    groups = [dict(params=inputs, lr=embedding_lr, weight_decay=table_decay)] if inputs else []
    groups.append(dict(params=[head], lr=lm_head_lr, weight_decay=table_decay))
    if others:
        groups.append(dict(params=others, lr=tc.lr, weight_decay=0.0))
    adam_kw = dict(betas=(tc.beta1, tc.beta2), eps=tc.adam_eps)
    if tc.optimizer == "muon":
        muon = torch.optim.Muon(
            [dict(params=matrices, lr=tc.lr, weight_decay=tc.weight_decay)],
            adjust_lr_fn=tc.muon_adjust_lr,
            momentum=muon_momentum(0, tc),
        )
        return [torch.optim.AdamW(groups, **adam_kw), muon]
    groups.append(dict(params=matrices, lr=tc.lr, weight_decay=tc.weight_decay))
    return [torch.optim.AdamW(groups, **adam_kw)]


def table_lrs(tc: TrainConfig) -> tuple[float, float]:
    """The embedding's and the lm_head's lrs: as given, else 10 x lr (the embedding is normalised right after
    lookup) and lr. A tied table trains at the lm_head's lr: it makes the logits, whose gradient reaches every row
    at every step through the softmax (the embedding's, only the rows of the tokens seen), and that is the role
    nanochat keeps 50x slower (unembedding 0.004, embedding 0.2)."""
    return tc.embedding_lr or 10 * tc.lr, tc.lm_head_lr or tc.lr


def lrs_by_role(model: torch.nn.Module, optimizers: list[torch.optim.Optimizer]) -> dict:
    """The lr (before the schedule) each part of the model trains at, as config.json records it: embedding (wte),
    lm_head, positions (nanoGPT's wpe), matrices (the blocks' Linear weights), other (norms, biases, filters).
    A tied table's embedding and lm_head lrs are its one lr."""
    lr = {id(p): g.get("initial_lr", g["lr"]) for opt in optimizers for g in opt.param_groups for p in g["params"]}
    t = model.transformer
    roles = dict(
        embedding=[t.wte.weight],
        lm_head=[model.lm_head.weight],
        positions=[t.wpe.weight] if "wpe" in t else [],
        matrices=[m.weight for m in t.h.modules() if isinstance(m, torch.nn.Linear)],
    )
    named = {id(p) for params in roles.values() for p in params}
    roles["other"] = [p for p in model.parameters() if id(p) not in named]
    return {role: lr[id(params[0])] for role, params in roles.items() if params}


def lr_multiplier(step: int, tc: TrainConfig, max_steps: int) -> float:
    """Linear warmup to 1, then cosine to min_lr_frac at max_steps, or constant then a linear warmdown."""
    if step < tc.warmup_steps:
        return (step + 1) / tc.warmup_steps
    if tc.schedule == "cosine":
        progress = (step - tc.warmup_steps) / max(1, max_steps - tc.warmup_steps)
        return tc.min_lr_frac + (1 - tc.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    warmdown = max(1, round(tc.warmdown_frac * max_steps))
    if step < max_steps - warmdown:
        return 1.0
    progress = (step - (max_steps - warmdown)) / warmdown
    return 1.0 - (1 - tc.min_lr_frac) * min(progress, 1.0)


def muon_momentum(step: int, tc: TrainConfig) -> float:
    """Muon's momentum: 0.95, or nanochat's ramp from 0.85 to 0.95 over the first muon_momentum_warmup steps."""
    if not tc.muon_momentum_warmup:
        return 0.95
    frac = min(step / tc.muon_momentum_warmup, 1.0)
    return (1 - frac) * 0.85 + frac * 0.95


def weight_decay_multiplier(step: int, tc: TrainConfig, max_steps: int) -> float:
    """1, or (linear) 1 - step / max_steps: nanochat's Muon decay, which reaches 0 at the end of training."""
    return 1.0 - step / max_steps if tc.wd_schedule == "linear" else 1.0


def apply_schedule(optimizers: list[torch.optim.Optimizer], step: int, tc: TrainConfig, max_steps: int):
    """Sets every group's lr and weight decay to its initial one x the schedule at `step`, and Muon's momentum."""
    lrm, wdm = lr_multiplier(step, tc, max_steps), weight_decay_multiplier(step, tc, max_steps)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lrm
            group["weight_decay"] = group["initial_weight_decay"] * wdm
            if "momentum" in group:  # Muon
                group["momentum"] = muon_momentum(step, tc)


# ----------------------------------------------------------------------------- checkpoints


def rng_state() -> dict:
    """Plain lists, numbers and tensors only, so a checkpoint loads with torch.load(weights_only=True)."""
    version, keys, gauss = random.getstate()
    kind, np_keys, pos, has_gauss, cached = np.random.get_state()
    return dict(
        python=[version, list(keys), gauss],
        numpy=[kind, np_keys.tolist(), int(pos), int(has_gauss), float(cached)],
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    )


def set_rng_state(state: dict):
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    kind, np_keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(np_keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainState:
    """What a checkpoint holds: all a run needs to continue the same loss curve. Every rank has its own data
    position and RNG, so `loader` and `rng` hold one entry per rank; the weights and optimizer states are the
    same on every rank and rank 0 writes them. Plain tensors, numbers, lists and dicts only: a checkpoint comes
    from shared storage and loads with torch.load(weights_only=True), which runs no code placed in it."""

    model: dict
    optimizers: list[dict]
    loader: list[dict]
    rng: list[dict]
    stability: dict
    step: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    best_val_bpb: float = math.inf
    best_val_loss: float = math.inf
    metrics: dict = field(default_factory=dict)  # the eval this checkpoint came with, as reported

    @classmethod
    def capture(cls, model, optimizers, loader, stability, *, ddp: bool, **progress) -> "TrainState | None":
        """Every rank calls it (the per-rank parts are gathered); rank 0 gets the state, the others None."""
        local = dict(loader=loader.state_dict(), rng=rng_state())
        gathered = [local]
        if ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, local)
            if dist.get_rank() != 0:
                return None
        return cls(
            model=model.state_dict(),
            optimizers=[o.state_dict() for o in optimizers],
            loader=[g["loader"] for g in gathered],
            rng=[g["rng"] for g in gathered],
            stability=stability.state_dict(),
            **progress,
        )

    def save(self, directory: str) -> str:
        torch.save(vars(self), os.path.join(directory, CHECKPOINT_FILE))  # not asdict: it would deep-copy every tensor
        return directory

    @classmethod
    def load(cls, directory: str, device) -> "TrainState":
        return cls(**torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location=device, weights_only=True))

    def restore(self, model, optimizers, loader, stability, rank: int):
        """Puts this state into a freshly built model, its optimizers, loader and stability tracker, and this
        rank's RNG."""
        model.load_state_dict(self.model)
        for opt, s in zip(optimizers, self.optimizers):
            opt.load_state_dict(s)
        loader.load_state_dict(self.loader[rank])
        stability.load_state_dict(self.stability)
        set_rng_state(self.rng[rank])


# ----------------------------------------------------------------------------- training stability


class Stability:
    """Spikes over training, so a variant that wins by the luck of a spike is visible.

    A loss spike is a step whose loss exceeds the median of the previous `window` steps by more than
    max(6 x their median absolute deviation, 5% of the median); a gradient spike is a step whose
    pre-clip gradient norm exceeds 3x the median of the previous `window` norms."""

    def __init__(self, window: int = 20):
        self.window, self.losses, self.norms = window, [], []
        self.loss_spikes = self.grad_spikes = 0
        self.grad_norm_max = 0.0

    def update(self, loss: float, grad_norm: float):
        if len(self.losses) >= self.window:
            prev = np.array(self.losses[-self.window :])
            med = float(np.median(prev))
            mad = float(np.median(np.abs(prev - med)))
            self.loss_spikes += loss > med + max(6 * mad, 0.05 * abs(med))
            self.grad_spikes += grad_norm > 3 * float(np.median(self.norms[-self.window :]))
        self.losses = (self.losses + [loss])[-self.window :]
        self.norms = (self.norms + [grad_norm])[-self.window :]
        self.grad_norm_max = max(self.grad_norm_max, grad_norm)

    def metrics(self) -> dict:
        return dict(
            probe_loss_spikes=int(self.loss_spikes),
            probe_grad_spikes=int(self.grad_spikes),
            probe_grad_norm_max=self.grad_norm_max,
        )

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict):
        self.__dict__.update(state)


# ----------------------------------------------------------------------------- the loop


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the trial fails with this reason (and is not retried)."""


@dataclass(frozen=True)
class RunSizes:
    """How a run's tokens divide: per micro-step (one batch on every worker), per optimizer step, and its steps."""

    tokens_per_micro: int
    tokens_per_step: int
    grad_accum: int  # micro-steps per optimizer step
    max_steps: int

    @classmethod
    def plan(cls, tc: TrainConfig, cfg: GPTConfig, world: int) -> "RunSizes":
        tokens_per_micro = tc.batch_size * cfg.seq_len * world
        tokens_per_step = tc.total_batch_tokens or tokens_per_micro
        if tokens_per_step % tokens_per_micro:
            raise ValueError(
                f"TrainConfig.total_batch_tokens={tokens_per_step}: must be a multiple of batch_size x seq_len x "
                f"workers = {tokens_per_micro}"
            )
        max_steps = math.ceil(tc.max_tokens / tokens_per_step) if tc.max_tokens else tc.max_steps
        return cls(tokens_per_micro, tokens_per_step, tokens_per_step // tokens_per_micro, max_steps)


@dataclass
class Progress:
    """How far the run has come: what a checkpoint records beside the weights, optimizers, data position and RNG."""

    started: float  # time.time() when this process called train()
    step: int = 0
    tokens: int = 0
    wall_before: float = 0.0  # the run's wall seconds before this process (a restored run's earlier ones)
    best_val_bpb: float = math.inf
    best_val_loss: float = math.inf  # the best eval's loss (the Toeplitz note reports its best checkpoint's eval loss)

    def wall_s(self) -> float:
        return time.time() - self.started + self.wall_before

    def add_eval(self, val: dict):
        self.best_val_bpb = min(self.best_val_bpb, val["val_bpb"])
        # The same eval as best_val_bpb: one val set, bpb a fixed multiple of loss.
        self.best_val_loss = min(self.best_val_loss, val["val_loss"])


@dataclass
class Window:
    """The steps since the last eval: an eval reports their mean loss and gradient norm and their speed."""

    started: float = field(default_factory=time.time)
    tokens: int = 0
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)

    def add(self, loss: float, grad_norm: float, tokens: int):
        self.losses.append(loss)
        self.grad_norms.append(grad_norm)
        self.tokens += tokens

    def tokens_per_s(self) -> float:
        return self.tokens / (time.time() - self.started)


def train(
    config: dict,
    *,
    report: Callable[[dict, str | None], None] | None = None,
    restore: str | None = None,
    out_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Trains one model from a flat trial config and returns the final metrics.

    report(metrics, checkpoint_dir): called on rank 0's schedule at every eval (Ray: ray.train.report;
        every rank must call it). checkpoint_dir is a directory holding CHECKPOINT_FILE, or None.
    restore: a directory holding CHECKPOINT_FILE to continue from (model, optimizer, schedule, data
        position, RNG): the run then continues the same loss curve.
    out_dir: where metrics.jsonl / config.json / samples.json go (rank 0 only); None writes nothing.
    """
    last = {}
    for last, checkpoint_dir in train_evals(
        config, checkpoint=report is not None, restore=restore, out_dir=out_dir, log=log
    ):
        emit(last, checkpoint_dir, report)
    return last


def train_evals(
    config: dict,
    *,
    checkpoint: bool = False,
    restore: str | None = None,
    out_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> Iterator[tuple[dict, str | None]]:
    """train() one eval at a time: yields (metrics, checkpoint_dir) at every eval, so that train_seeds can
    advance several runs in turn. checkpoint: save one at each eval (as the config allows)."""
    t_start = time.time()
    mark("train_start")
    tc = TrainConfig.from_dict(config)
    data = prepare_tokens(tc.corpus, tc.tokenizer)
    cfg, tc = resolve_configs(config, data.vocab_size)
    worker = Worker.current(tc)
    sizes = RunSizes.plan(tc, cfg, worker.world)
    model, optimizers, loader = build_run(cfg, tc, data, worker, sizes)
    params, fpt = count_params(cfg), flops_per_token(cfg)
    peak = peak_flops(worker.device) * worker.world

    progress, stability = Progress(started=t_start), Stability()
    if restore:
        state = TrainState.load(restore, worker.device)
        state.restore(model, optimizers, loader, stability, worker.rank)
        progress = Progress(t_start, state.step, state.tokens, state.wall_s, state.best_val_bpb, state.best_val_loss)
        log(f"resumed from step {progress.step} ({progress.tokens:,} tokens)")
        if progress.step >= sizes.max_steps:
            # A run restored from its last checkpoint has nothing left to train, but its caller still needs the
            # final result: Tune can start a finished trial again after a crash (its searcher's saved state
            # older than its trials'), and fails a trial whose run reports nothing.
            yield state.metrics, None
            return

    train_model = training_model(model, tc, worker)
    metrics_file = None
    if out_dir and worker.rank == 0:
        metrics_file = open_run_files(out_dir, config, cfg, tc, model, optimizers, params, fpt, sizes, progress.step)
    log(describe_run(cfg, params, sizes, worker))

    model.train()
    window, last = Window(), {}
    while progress.step < sizes.max_steps:
        loss, grad_norm = optimizer_step(model, train_model, optimizers, loader, progress.step, tc, sizes, worker)
        stability.update(loss, grad_norm)
        progress.step += 1
        if progress.step == 1:
            mark("first_step")
        progress.tokens += sizes.tokens_per_step
        window.add(loss, grad_norm, sizes.tokens_per_step)
        if progress.step % tc.eval_every == 0 or progress.step == sizes.max_steps:
            tok_s = window.tokens_per_s()  # taken before the eval: the speed of training alone
            val = evaluate(model, data, tc, cfg, worker)
            progress.add_eval(val)
            last = eval_record(progress, window, tok_s, val, optimizers, stability, params, fpt, peak, cfg.seq_len)
            if worker.ddp:
                last["param_sync_err"] = param_sync_error(model)
            if progress.step == sizes.max_steps and worker.rank == 0:
                last.update(final_measurements(model, data, cfg, tc, worker.device, out_dir))
            log(
                f"step {progress.step}/{sizes.max_steps} | train {last['train_loss']:.4f} | "
                f"val bpb {val['val_bpb']:.4f} | {tok_s:,.0f} tok/s | mfu {last['mfu']:.1%}"
            )
            checkpoint_dir = None
            if tc.checkpoint and checkpoint:
                checkpoint_dir = save_checkpoint(model, optimizers, loader, stability, worker, progress, last)
            write_metrics_line(metrics_file, last)
            yield last, checkpoint_dir
            window = Window()  # after the yield: time another seed's run took in between is not this run's

    if tc.sample_tokens and worker.rank == 0 and out_dir:
        write_samples(model, data, tc, cfg, worker.device, Path(out_dir) / "samples.json")
    if metrics_file:
        metrics_file.close()
    mark("train_end")


# ----------------------------------------------------------------------------- one config, several seeds

SEEDS_FILE = "seeds.json"  # in a seeds checkpoint: how many seeds, and the mean eval it came with (written last)
SEED_METRICS = ("train_loss", "val_loss", "val_bpb", "best_val_bpb", "best_val_loss")  # kept per seed as KEY_seedK


def mean_over_seeds(records: list[dict], seeds: list[int]) -> dict:
    """One eval of every seed -> the record the trial reports: each number the arithmetic mean over the seeds (a
    value they share, such as step or params_total, as it is), each SEED_METRICS key also per seed (KEY_seedS for
    seed S), and `seeds`, their count."""
    out = {}
    for key in records[0]:
        values = [r.get(key) for r in records]
        if all(v == values[0] for v in values):
            out[key] = values[0]
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = sum(values) / len(values)
    for key in SEED_METRICS:
        if key in records[0]:
            out.update({f"{key}_seed{seed}": r.get(key) for seed, r in zip(seeds, records)})
    return {**out, "seeds": len(records)}


def train_seeds(
    config: dict,
    seeds: int,
    *,
    first_seed: int = 0,
    report: Callable[[dict, str | None], None] | None = None,
    restore: str | None = None,
    out_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """One config trained with seeds first_seed..first_seed+seeds-1 (each run's seed, so its init_seed and data_seed
    unless the config fixes them), in lockstep: every run trains one eval window in turn, then the mean over the
    seeds at that step is reported, so a scheduler decides on the mean at each rung. Each run keeps its own RNG
    state between its windows (the global RNGs are shared). out_dir/seedS holds seed S's files, out_dir/metrics.jsonl
    the reported means; a checkpoint holds every run's, in seedS/, and `restore` continues all of them."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    values = list(range(first_seed, first_seed + seeds))
    runs = [
        train_evals(
            {**config, "seed": s},
            checkpoint=report is not None,
            restore=restore and os.path.join(restore, f"seed{s}"),
            out_dir=out_dir and os.path.join(out_dir, f"seed{s}"),
            log=lambda msg, s=s: log(f"seed {s}: {msg}"),
        )
        for s in values
    ]
    metrics_file = open_means_file(out_dir, restore) if out_dir and rank == 0 else None
    rngs: list[dict | None] = [None] * seeds
    last = {}
    while True:
        records, dirs = [], []
        for k, run in enumerate(runs):
            if rngs[k] is not None:
                set_rng_state(rngs[k])
            item = next(run, None)  # every run has the same evals: they end together
            rngs[k] = rng_state()
            if item is not None:
                records.append(item[0])
                dirs.append(item[1])
        if not records:
            break
        if out_dir and rank == 0 and len(records) == seeds and not (Path(out_dir) / "config.json").exists():
            # the model and its sizes are the same for every seed: the trial's row reads them from here
            write_atomic(
                Path(out_dir) / "config.json", (Path(out_dir) / f"seed{first_seed}" / "config.json").read_text()
            )
        last = mean_over_seeds(records, values)
        write_metrics_line(metrics_file, last)
        emit(last, merge_checkpoints(dirs, values, last), report)
    if metrics_file:
        metrics_file.close()
    return last


def open_means_file(out_dir: str, restore: str | None) -> TextIO:
    """out_dir/metrics.jsonl to append the means to, with only those up to the restored checkpoint's step kept."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    step = 0
    if restore and os.path.exists(os.path.join(restore, SEEDS_FILE)):
        step = json.loads(Path(restore, SEEDS_FILE).read_text())["metrics"].get("step", 0)
    return open_metrics(Path(out_dir) / "metrics.jsonl", step)


def merge_checkpoints(dirs: list[str | None], seeds: list[int], metrics: dict) -> str | None:
    """The seeds' checkpoints (rank 0's) as one: seedS/ each, then SEEDS_FILE; None where a run saved none."""
    if not dirs or any(d is None for d in dirs):
        return None
    merged = tempfile.mkdtemp(prefix="ckpt_seeds_")
    for seed, d in zip(seeds, dirs):
        os.replace(d, os.path.join(merged, f"seed{seed}"))
    write_atomic(Path(merged) / SEEDS_FILE, json.dumps({"seeds": seeds, "metrics": metrics}))
    return merged


def build_run(
    cfg: GPTConfig, tc: TrainConfig, data, worker: Worker, sizes: RunSizes
) -> tuple[GPT, list[torch.optim.Optimizer], TokenLoader]:
    """The model, its optimizers and this rank's loader, built after seeding every RNG with the run's init_seed (the
    loader draws its order from data_seed)."""
    torch.manual_seed(tc.init_seed)
    random.seed(tc.init_seed)
    np.random.seed(tc.init_seed)
    model = build_model(cfg).to(worker.device)
    optimizers = build_optimizers(model, tc)
    for opt in optimizers:  # what apply_schedule scales
        for group in opt.param_groups:
            group["initial_lr"], group["initial_weight_decay"] = group["lr"], group["weight_decay"]
    loader = TokenLoader(
        data,
        tc.batch_size,
        cfg.seq_len,
        rank=worker.rank,
        world_size=worker.world,
        seed=tc.data_seed,
        accum_steps=sizes.grad_accum,
    )
    return model, optimizers, loader


def training_model(model: GPT, tc: TrainConfig, worker: Worker) -> torch.nn.Module:
    """The model as the steps run it: compiled if asked, wrapped in DDP across ranks (evals use `model` itself)."""
    train_model = torch.compile(model) if tc.compile else model
    if worker.ddp:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[worker.device.index] if worker.device.type == "cuda" else None
        )
    return train_model


def open_run_files(
    out_dir: str,
    config: dict,
    cfg: GPTConfig,
    tc: TrainConfig,
    model: GPT,
    optimizers: list[torch.optim.Optimizer],
    params: dict,
    fpt: float,
    sizes: RunSizes,
    step: int,
) -> TextIO:
    """Writes config.json (the trial, what was built, its lrs and planned steps) and opens metrics.jsonl to append
    to, with only its evals up to `step` kept."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    built = {**cfg.to_dict(), "nanohead_share_achieved": nanohead_share(cfg)}  # what was built, as rounded
    write_atomic(
        out / "config.json",
        json.dumps(
            dict(
                trial=config,
                model=built,
                train=asdict(tc),
                params=params,
                flops_per_token=fpt,
                lrs=lrs_by_role(model, optimizers),
                planned_steps=sizes.max_steps,
            ),
            indent=2,
        ),
    )
    return open_metrics(out / "metrics.jsonl", step)


def open_metrics(path: Path, step: int) -> TextIO:
    """A metrics.jsonl to append to, with only its evals up to `step` kept: after a restore, the evals past the
    checkpoint are about to be redone."""
    if path.exists():
        evals, torn = read_jsonl(path)
        if torn:  # a process killed while appending leaves a partial last line
            print(f"warning: {path}: dropped {torn} torn or unreadable line(s)", file=sys.stderr)
        write_atomic(path, "".join(json.dumps(m) + "\n" for m in evals if m.get("step", 0) <= step))
    return open(path, "a")


def describe_run(cfg: GPTConfig, params: dict, sizes: RunSizes, worker: Worker) -> str:
    """The log's one line about the run before its first step."""
    return (
        f"model: {params['total']:,} params ({params['non_embedding']:,} non-embedding), {cfg.n_layer} layers x {cfg.n_embd} wide, "
        f"{cfg.arch} mixer={cfg.mixer}{' softmax1' if cfg.softmax1 else ''}{f' nano p={cfg.nanohead_proportion}' if cfg.nanohead_proportion else ''}; "
        f"{sizes.max_steps} steps x {sizes.tokens_per_step:,} tokens on {worker.world} x {worker.device.type}{' bf16' if worker.amp_dtype else ''}"
    )


def optimizer_step(
    model: GPT,
    train_model: torch.nn.Module,
    optimizers: list[torch.optim.Optimizer],
    loader: TokenLoader,
    step: int,
    tc: TrainConfig,
    sizes: RunSizes,
    worker: Worker,
) -> tuple[float, float]:
    """One optimizer step at `step`'s lr, weight decay and momentum over grad_accum micro-batches (train_model: the
    model as compiled and DDP-wrapped); returns the mean loss over every rank and the pre-clip gradient norm."""
    apply_schedule(optimizers, step, tc, sizes.max_steps)
    loss_sum = 0.0
    for micro in range(sizes.grad_accum):
        x, y = next(loader)
        x, y = x.to(worker.device, non_blocking=True), y.to(worker.device, non_blocking=True)
        sync = not worker.ddp or micro == sizes.grad_accum - 1  # all-reduce once per optimizer step
        ctx = train_model.no_sync() if worker.ddp and not sync else nullcontext()
        with ctx, worker.autocast():
            loss = train_model(x, y)
        (loss / sizes.grad_accum).backward()
        loss_sum += loss.detach()
    if worker.ddp:  # one scalar: every rank logs the same loss and stops at the same step if it diverges
        dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
    loss_value = float(loss_sum) / sizes.grad_accum
    if not math.isfinite(loss_value):
        raise TrainingDiverged(f"loss became {loss_value} at step {step}")
    # Pre-clip norm (clip at inf only measures), for the stability probes.
    grad_norm = float(
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf)
    )
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    return loss_value, grad_norm


def evaluate(model: GPT, data, tc: TrainConfig, cfg: GPTConfig, worker: Worker) -> dict:
    """val_loss and val_bpb over eval_batches; the ranks split the val windows and all-reduce the sums."""
    model.eval()
    with worker.autocast():
        result = evaluate_bpb(
            model,
            data,
            tc.batch_size,
            cfg.seq_len,
            max_batches=tc.eval_batches,
            device=worker.device,
            rank=worker.rank,
            world_size=worker.world,
        )
    model.train()
    return {"val_loss": result["val_loss"], "val_bpb": result["val_bpb"]}


def eval_record(
    progress: Progress,
    window: Window,
    tok_s: float,
    val: dict,
    optimizers: list[torch.optim.Optimizer],
    stability: Stability,
    params: dict,
    fpt: float,
    peak: float,
    seq_len: int,
) -> dict:
    """One eval's metrics as metrics.jsonl and the report carry them: where the run is, its losses since the last
    eval and now, its speed, the model's size and cost, and the stability counts so far."""
    return dict(
        step=progress.step,
        tokens=progress.tokens,
        train_loss=float(np.mean(window.losses)),
        **val,
        best_val_bpb=progress.best_val_bpb,
        best_val_loss=progress.best_val_loss,
        lr=optimizers[-1].param_groups[-1]["lr"],  # the matrices' (their group is built last)
        tokens_per_s=tok_s,
        mfu=tok_s * fpt / peak,
        params_total=params["total"],
        params_non_embedding=params["non_embedding"],
        flops_per_token=fpt,
        flops=fpt * progress.tokens,
        wall_s=progress.wall_s(),
        samples_per_s=tok_s / seq_len,
        grad_norm=float(np.mean(window.grad_norms)),
        **stability.metrics(),
    )


def final_measurements(model: GPT, data, cfg: GPTConfig, tc: TrainConfig, device, out_dir: str | None) -> dict:
    """What the last eval adds on rank 0, as the config asks: generation speed, then the probes."""
    out = {}
    if tc.gen_benchmark_tokens:
        out.update(generation_benchmark(model, data, tc, device))
    if tc.probes:
        out.update(probe(model, data, cfg, tc, device, out_dir))
    return out


def save_checkpoint(
    model: GPT,
    optimizers: list[torch.optim.Optimizer],
    loader: TokenLoader,
    stability: Stability,
    worker: Worker,
    progress: Progress,
    metrics: dict,
) -> str | None:
    """Every rank calls it; rank 0 saves the TrainState to a fresh directory and returns it, the others None."""
    with span("checkpoint"):
        state = TrainState.capture(
            model,
            optimizers,
            loader,
            stability,
            ddp=worker.ddp,
            step=progress.step,
            tokens=progress.tokens,
            wall_s=progress.wall_s(),
            best_val_bpb=progress.best_val_bpb,
            best_val_loss=progress.best_val_loss,
            metrics=json.loads(json.dumps(metrics)),  # plain types, as reported: weights_only loads them
        )
        return state.save(tempfile.mkdtemp(prefix="ckpt_")) if state else None


def emit(metrics: dict, checkpoint_dir: str | None, report: Callable[[dict, str | None], None] | None):
    """One eval out: the report with its checkpoint (every rank)."""
    if report is not None:
        with span("report", checkpoint=checkpoint_dir is not None):
            report(metrics, checkpoint_dir)


def write_metrics_line(metrics_file: TextIO | None, metrics: dict):
    """One eval's line of metrics.jsonl (rank 0's)."""
    if metrics_file:
        metrics_file.write(json.dumps(metrics) + "\n")
        metrics_file.flush()


def nanohead_share(cfg: GPTConfig) -> float:
    """The share of the query width, and so of the q/k/v parameters, that the split rule gave nano heads: the
    requested proportion rounded to whole heads (p=0.2 at 512 wide, 4 heads: 32 heads of 3, 0.1875)."""
    from trainables.model import nanohead_split

    return nanohead_split(cfg).nano_fraction if cfg.mixer == "attention" else 0.0


def param_sync_error(model: torch.nn.Module) -> float:
    """DDP keeps every rank's parameters identical; the spread of a per-rank checksum proves it (0.0)."""
    checksum = torch.stack([p.detach().double().sum() * (i + 1) for i, p in enumerate(model.parameters())]).sum()
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    return float(torch.stack(gathered).max() - torch.stack(gathered).min())


def probe(model: GPT, data, cfg: GPTConfig, tc: TrainConfig, device, out_dir: str | None) -> dict:
    """What each hypothesis is about beyond the loss (outliers, W8A8, head behaviour, filters): scalars for
    the trials table, per-layer/per-head details to probes.json for the report."""
    from trainables.probes import run_probes

    scalars, details = run_probes(model, data, cfg.seq_len, batch_size=min(8, tc.batch_size), batches=2, device=device)
    if out_dir:
        write_atomic(Path(out_dir) / "probes.json", json.dumps(details, allow_nan=False))
    return scalars


@torch.no_grad()
def generation_benchmark(model: GPT, data, tc: TrainConfig, device) -> dict:
    """Greedy generation speed, as the Toeplitz note's benchmark: the mixer's heads at once vs one at a time
    (attention ignores the path), with the cache (each new token one position) and without (the whole context
    rerun every step). A one-token prompt per row, two warm-up runs, then the mean over gen_benchmark_runs, in
    the training's autocast dtype; on a GPU the timer waits for the queued kernels (torch.cuda.synchronize).

    Keys: gen_{tokens_per_s,mean_time}_{parallel,sequential} (cached) and ..._uncached_{parallel,sequential};
    gen_speedup / gen_speedup_uncached (parallel over sequential), gen_cache_speedup_{parallel,sequential}
    (cached over uncached)."""
    prompt = (
        torch.from_numpy(np.asarray(data.val_tokens()[:1], dtype=np.int64)).expand(tc.gen_benchmark_batch, 1).to(device)
    )
    amp_dtype = autocast_dtype(tc, device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def generate(path: str, use_cache: bool):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            model.generate(prompt, tc.gen_benchmark_tokens, temperature=0, mixer_path=path, use_cache=use_cache)

    model.eval()
    out = {}
    for cached in ("", "uncached_"):
        for path in ("parallel", "sequential"):
            for _ in range(2):
                generate(path, not cached)
            times = []
            for _ in range(tc.gen_benchmark_runs):
                sync()
                t0 = time.perf_counter()
                generate(path, not cached)
                sync()
                times.append(time.perf_counter() - t0)
            out[f"gen_mean_time_{cached}{path}"] = float(np.mean(times))
            out[f"gen_tokens_per_s_{cached}{path}"] = (
                tc.gen_benchmark_batch * tc.gen_benchmark_tokens / float(np.mean(times))
            )
        out[f"gen_speedup{'_uncached' if cached else ''}"] = (
            out[f"gen_tokens_per_s_{cached}parallel"] / out[f"gen_tokens_per_s_{cached}sequential"]
        )
    for path in ("parallel", "sequential"):
        out[f"gen_cache_speedup_{path}"] = out[f"gen_tokens_per_s_{path}"] / out[f"gen_tokens_per_s_uncached_{path}"]
    model.train()
    return out


@torch.no_grad()
def write_samples(model: GPT, data, tc: TrainConfig, cfg: GPTConfig, device, path: Path, n: int = 3):
    """A few samples from fixed val prompts (temperature 0.8, top-k 50, seeded), e.g. for the softmax1 report."""
    from trainables.data import get_tokenizer, load_corpus

    enc = get_tokenizer(tc.tokenizer, corpus=load_corpus(tc.corpus) if tc.tokenizer.startswith("bpe:") else None)
    val = torch.from_numpy(np.asarray(data.val_tokens()[: 16 * n], dtype=np.int64)).view(n, 16).to(device)
    g = torch.Generator(device=device).manual_seed(tc.data_seed)  # paired arms draw with the same numbers
    model.eval()
    out = model.generate(val, tc.sample_tokens, temperature=0.8, top_k=50, generator=g)
    write_atomic(
        path,
        json.dumps(
            dict(prompt=[enc.decode(p.tolist()) for p in val], samples=[enc.decode(o.tolist()) for o in out]), indent=2
        ),
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train one model from a trial config, in one process, without Ray.")
    ap.add_argument("--config", required=True, help="JSON file with a flat trial config (GPTConfig + TrainConfig keys)")
    ap.add_argument("--out", default=None, help="directory for metrics.jsonl, config.json, samples.json")
    args = ap.parse_args(argv)
    try:
        config = json.loads(Path(args.config).read_text())
        data = prepare_tokens(config.get("corpus", "wiki"), config.get("tokenizer", "bpe:4096"))
        resolve_configs(config, data.vocab_size)  # validate everything before training
    except (OSError, ValueError) as e:  # DataError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    train(config, out_dir=args.out)


if __name__ == "__main__":
    main()
