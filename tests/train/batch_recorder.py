"""train() with a hook that records every batch the model is given, as token ids, and the weights it starts from.

    python batch_recorder.py CONFIG_JSON OUT_DIR     (under torchrun: one rank{R}.pt per rank, gloo on CPU)

A forward pre-hook on every module (torch's own global hook) sees each GPT call, the one DDP makes on each rank
included, so what is recorded is what the model saw, not what the loader was asked for.
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from trainables.model import GPT
from trainables.train import train


def record(config: dict) -> dict:
    """train(config) -> {"train": [x per micro-step], "val": [x per val batch], "init": the first weights' checksum,
    "final": train's final metrics}; the val batches are the final eval's (set eval_every past max_steps)."""
    seen = {"train": [], "val": [], "init": None}

    def hook(module, args):
        if not isinstance(module, GPT):
            return
        if seen["init"] is None:  # float64 sum of each parameter, in order: equal only for the same weights
            seen["init"] = [float(p.detach().double().sum()) for p in module.parameters()]
        seen["train" if module.training else "val"].append(args[0].detach().cpu().clone())

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        seen["final"] = train(config, log=lambda message: None)
    finally:
        handle.remove()
    return seen


if __name__ == "__main__":
    config, out = json.loads(sys.argv[1]), Path(sys.argv[2])
    if "WORLD_SIZE" in os.environ:  # torchrun's environment: one process per rank
        dist.init_process_group("gloo")
    recorded = record(config)
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.save(recorded, out / f"rank{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()
