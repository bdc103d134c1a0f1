"""Budgets. A profile scales model size, steps and batch; it never changes a study's axes.

smoke  seconds a trial: for tests and for checking a set-up end to end
cpu    the default: a whole study in minutes on a 2-core laptop, learning visible in the curves
gpu    one GPU, hours: bf16, torch.compile, bigger models and batches
paper  the research notes' own settings (each study overrides what its note fixed)
"""

from dataclasses import asdict, dataclass


@dataclass(frozen=True, kw_only=True)
class Profile:
    name: str
    budget: float  # target parameters for studies that size models by budget (solver)
    head_dim: int
    aspect_ratio: float  # width / depth the solver aims for (nanochat: 64)
    seq_len: int
    batch_size: int  # sequences per micro-step per worker
    max_steps: int
    warmup_steps: int
    eval_every: int
    eval_batches: int
    tokenizer: str  # default tokenizer for studies that do not fix one
    dtype: str = "auto"
    compile: bool = False
    workers_per_trial: int = 1
    gpus_per_trial: int = 0

    def train_keys(self) -> dict:
        """The TrainConfig / GPTConfig keys every trial of this profile starts from."""
        d = asdict(self)
        return {
            k: d[k]
            for k in (
                "budget",
                "head_dim",
                "aspect_ratio",
                "seq_len",
                "batch_size",
                "max_steps",
                "warmup_steps",
                "eval_every",
                "eval_batches",
                "tokenizer",
                "dtype",
                "compile",
            )
        }


PROFILES = {
    "smoke": Profile(
        name="smoke",
        budget=1.6e5,
        head_dim=32,
        aspect_ratio=32,
        seq_len=64,
        batch_size=8,
        max_steps=30,
        warmup_steps=5,
        eval_every=10,
        eval_batches=2,
        tokenizer="bpe:512",
    ),
    "cpu": Profile(
        name="cpu",
        budget=2.0e6,
        head_dim=32,
        aspect_ratio=32,
        seq_len=128,
        batch_size=16,
        max_steps=300,
        warmup_steps=30,
        eval_every=50,
        eval_batches=8,
        tokenizer="bpe:4096",
    ),
    "gpu": Profile(
        name="gpu",
        budget=5.0e7,
        head_dim=128,
        aspect_ratio=64,
        seq_len=1024,
        batch_size=32,
        max_steps=3000,
        warmup_steps=100,
        eval_every=250,
        eval_batches=40,
        tokenizer="bpe:32768",
        dtype="bfloat16",
        compile=True,
        gpus_per_trial=1,
    ),
    "paper": Profile(
        name="paper",
        budget=5.0e7,
        head_dim=128,
        aspect_ratio=64,
        seq_len=2048,
        batch_size=32,
        max_steps=500,
        warmup_steps=50,
        eval_every=100,
        eval_batches=80,
        tokenizer="bpe:65536",
        dtype="bfloat16",
        compile=True,
        gpus_per_trial=1,
    ),
}
DEFAULT_PROFILE = "cpu"
