"""softmax1 / quiet attention (note 004): exp(x_i) / (1 + sum_j exp(x_j)) in every head, on nanoGPT's baby GPT.

Every profile trains nanoGPT's own model (arch="nanogpt"), as the note did: no QK norm to bound the attention
logits, so "attend to nothing" is what is tested. Pre-registered verdict: "interesting" when perplexity improves
by at least 5%. Samples from both arms.
"""

from . import fidelity
from .common import REDDIT, seed_suffix
from .fidelity import FidelityRow
from .spec import StudySpec

AXES = {"softmax1": [False, True]}
# nanoGPT's model.py at the note's commit eba36e8: LayerNorm, learned positions, GELU, tied embeddings, bias=False.
NANOGPT = dict(arch="nanogpt", bias=False, qk_norm=False, logit_softcap=None, tie_embeddings=True)
# The note's baby GPT (nanoGPT train_shakespeare_char with n_embd doubled): 6 layers, 6 heads, width 768,
# block 256, batch 64, gpt2 encoding, dropout 0.2, AdamW lr 1e-3 (one lr for every tensor) beta2 0.99,
# 100 warmup, cosine to 1e-4, clip 1; weight decay 0.1 and beta1 0.9 are nanoGPT train.py's defaults.
PAPER = dict(
    **NANOGPT,
    n_layer=6,
    n_head=6,
    n_embd=768,
    seq_len=256,
    tokenizer="gpt2",
    dropout=0.2,
    lr=1e-3,
    beta2=0.99,
    warmup_steps=100,
    min_lr_frac=0.1,
    grad_clip=1.0,
    batch_size=64,
    embedding_lr=1e-3,
    lm_head_lr=1e-3,
    weight_decay=0.1,
)


def base(profile) -> dict:
    keys = {**profile.train_keys(), **PAPER, "budget": None, "sample_tokens": 48}
    if profile.name == "smoke":
        keys.update(
            n_layer=2, n_head=2, n_embd=64, seq_len=64, batch_size=8, tokenizer=profile.tokenizer, warmup_steps=5
        )
    elif profile.name == "cpu":  # the baby GPT scaled to a laptop: same depth and heads, narrower, own vocab
        keys.update(
            n_embd=192,
            seq_len=128,
            batch_size=16,
            tokenizer=profile.tokenizer,
            warmup_steps=30,
            lr=3e-3,
            embedding_lr=3e-3,
            lm_head_lr=3e-3,
        )
    elif profile.name == "gpu":
        keys.update(max_steps=5000, eval_every=250, corpus=REDDIT)  # the embedded corpus would be ~80 epochs
    else:  # max_iters 100,000 as the note's text says (its table says 1,000,000); eval as train_shakespeare_char
        keys.update(max_steps=100_000, eval_every=250, eval_batches=200, corpus=REDDIT)
    return keys


def resolve(config: dict) -> dict:
    return config


def variant(config: dict) -> str:
    return "softmax1" if config["softmax1"] else "softmax"


def trial_name(config: dict) -> str:
    return f"softmax1_ab_{variant(config)}" + seed_suffix(config)


def note_vs_run(trials: list[dict], workers: int) -> tuple[FidelityRow, ...]:
    """Note 004 (nanoGPT eba36e8, train_shakespeare_char with n_embd 768, gpt2 tokens of Reddit) beside the plan."""
    t = fidelity.first(trials)
    g, tc = t["gpt"], t["train"]
    n_steps = t["tokens"] // t["per_step"]
    baby_gpt = (
        g.arch == "nanogpt"
        and not g.bias
        and g.tie_embeddings
        and g.dropout == 0.2
        and (g.n_layer, g.n_head, g.n_embd, g.seq_len) == (6, 6, 768, 256)
    )
    adamw = (
        tc.optimizer == "adamw"
        and set(fidelity.role_lrs(t).values()) == {1e-3}
        and tc.beta1 == 0.9
        and tc.beta2 == 0.99
        and tc.adam_eps == 1e-8
        and tc.weight_decay == 0.1
        and tc.grad_clip == 1.0
    )
    cosine = tc.schedule == "cosine" and tc.warmup_steps == 100 and tc.min_lr_frac == 0.1
    arms = fidelity.values(trials, lambda t: "softmax1" if t["gpt"].softmax1 else "softmax")
    n_seeds = len(fidelity.seeds(trials))
    return (
        FidelityRow(
            "model",
            "nanoGPT eba36e8 model.py (LayerNorm, learned positions, GELU, tied embeddings, "
            "bias=False): 6 layers x 768 wide, 6 heads of 128, block 256, dropout 0.2",
            fidelity.model(g),
            "" if baby_gpt else "not the note's baby GPT",
        ),
        FidelityRow(
            "vocab",
            "gpt2 encoding; nanoGPT pads the vocab to 50,304 when the data has no meta.pkl",
            f"{tc.tokenizer}: {g.vocab_size:,} tokens; {fidelity.params(g)}",
            f"nanoGPT's {50_304 - g.vocab_size} padding rows are never targets (their logits only learn to be "
            f"small) and are there for GPU matmul speed: {(50_304 - g.vocab_size) * g.n_embd:,} parameters fewer "
            f"here"
            if (tc.tokenizer, g.vocab_size) == ("gpt2", 50_257)
            else "not gpt2's tokens",
        ),
        FidelityRow(
            "softmax1",
            "exp(x_i) / (1 + sum_j exp(x_j)) in every head; the note's code change is still 'TODO'",
            f"arms {arms}: softmax1 as a null key of logit 0 and value 0 in front of each head's keys (tested "
            f"against the formula)",
            "the note does not show its change",
        ),
        FidelityRow(
            "optimizer",
            "AdamW (configure_optimizers): lr 1e-3 for every tensor, betas (0.9, 0.99), eps 1e-8, "
            "weight decay 0.1 on every 2-D tensor (the embeddings too), none on LayerNorms; clip 1.0",
            fidelity.optimizer(t),
            "" if adamw else "not the note's AdamW",
        ),
        FidelityRow(
            "schedule",
            "warmup_iters 100 (lr x it/100, so 0 at step 0), cosine to min_lr 1e-4 at lr_decay_iters = max_iters",
            fidelity.schedule(t),
            "warmup one step ahead: (step+1)/100 here, nanoGPT's it/100 trains step 0 at lr 0"
            if cosine
            else "not the note's schedule",
        ),
        FidelityRow(
            "batch",
            "batch_size 64 x block_size 256, gradient_accumulation_steps 1: 16,384 tokens per step",
            fidelity.batch(t, workers),
            "" if (tc.batch_size, t["per_step"]) == (64, 16_384) else "not the note's batch",
        ),
        FidelityRow(
            "steps",
            "max_iters 100,000 in the note's text (its table says 1,000,000)",
            fidelity.steps(t),
            "the note's text and table disagree: the text's 100,000 runs (the table's 1,000,000 would be 16.4B tokens)"
            if n_steps == 100_000
            else "not the note's max_iters",
        ),
        FidelityRow(
            "precision",
            "bf16 autocast, torch.compile; nanoGPT allows tf32 for fp32 matmuls",
            fidelity.precision(tc) + "; tf32 left at PyTorch's default (off for matmuls)",
            "under bf16 autocast the matmuls run in bf16, so tf32 changes little"
            if (tc.dtype, tc.compile) == ("bfloat16", True)
            else "not the note's bf16 + compile",
        ),
        FidelityRow(
            "hardware",
            "device cuda, backend nccl (on modal.com)",
            f"{workers} worker{'s' if workers > 1 else ''} per trial{' (DDP)' if workers > 1 else ', no DDP'}; "
            f"device {tc.device}",
            "nccl is nanoGPT's backend under torchrun; the note names no GPU count: one "
            "here (--workers-per-trial N runs DDP)"
            if workers == 1
            else "",
        ),
        FidelityRow(
            "data",
            "the author's Reddit text sample (not public) through nanoGPT's shakespeare prepare.py: gpt2 "
            "tokens of one text, the first 90% train, the last 10% val",
            fidelity.data(tc),
            "the note's Reddit sample is private: r/todayilearned comments stand in, each a document after a "
            "BOS token; val by document hash (the same in every trial), not the text's last 10%"
            if tc.corpus == REDDIT
            else "not a Reddit corpus",
        ),
        FidelityRow(
            "batches, seeds",
            "get_batch: 64 random offsets anywhere in train.bin; torch seed 1337",
            fidelity.loader(t, trials),
            "this project's loader (each token a target once per epoch, resumable "
            "mid-epoch) and its seeds 0..N-1 (--seeds N)",
        ),
        FidelityRow(
            "eval",
            "estimate_loss every 250 iters: the mean loss of 200 random batches of train and of val; a "
            "checkpoint only when val improves (always_save_checkpoint=False)",
            fidelity.evaluation(t),
            "fixed val windows, so every eval and both arms score the same tokens; train loss is the mean over "
            "the steps since the last eval; val loss leaves out the BOS targets (no bytes), as bpb does",
        ),
        FidelityRow(
            "metric",
            "perplexity '2^loss'; 'interesting' if it improves by 5%; samples judged by eye only",
            f"perplexity ratio e^(val_loss softmax1 - val_loss softmax) at the final eval; the 5% line is met "
            f"only when its 95% interval (over seeds) is below 0.95; best_val_loss kept; samples of "
            f"{tc.sample_tokens} tokens per arm",
            "nanoGPT's loss is in nats: 2^loss is the perplexity only of a loss in bits, and 2^(a - b) is not "
            "the ratio e^(a - b); the note does not say final or best-checkpoint loss",
        ),
        FidelityRow(
            "arms",
            "softmax vs softmax1, one run each",
            f"{arms}; seeds {', '.join(map(str, fidelity.seeds(trials)))}",
            "" if n_seeds == 1 else "seeds: one run per arm cannot tell a few % from noise",
        ),
    )


STUDY = StudySpec(
    name="softmax1_ab",
    family="softmax1",
    note="004_39036d62147a7b75.txt",
    hypothesis="softmax1 (quiet attention) improves perplexity by at least 5% over softmax on the baby GPT "
    "(pre-registered threshold).",
    base=base,
    axes=lambda profile: dict(AXES),
    resolve=resolve,
    variant=variant,
    trial_name=trial_name,
    baseline="softmax",
    threshold=0.05,  # pre-registered: perplexity at least 5% lower (the softmax1 report view judges it)
    views=("softmax1",),
    fidelity=note_vs_run,
)
