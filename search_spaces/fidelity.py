"""The "note vs this run" table: a study's research note beside what its plan trains, and why they differ.

Each study module's note_vs_run(trials, workers) returns FidelityRows. The note's side is text from the note;
this run's side is written here from the planned trials (each a dict with the resolved `config`, its `gpt`
GPTConfig and `train` TrainConfig, `tokens` and `per_step` tokens), so it cannot drift from what runs.
study.run prints the table after the dry-run's trial table and records it in study.json, whose copy the
report shows.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class FidelityRow:
    aspect: str  # model, optimizer, batch, steps, data, metric, ...
    note: str  # the note's setting, in the note's words where it has them
    this_run: str  # what the plan runs, from the resolved trials
    reason: str = ""  # why this run differs from the note; empty when it does not

    def __post_init__(self):
        for name in ("aspect", "note", "this_run", "reason"):
            value = getattr(self, name)
            if not isinstance(value, str) or (name != "reason" and not value.strip()):
                raise ValueError(
                    f"FidelityRow.{name}={value!r}: must be {'text' if name == 'reason' else 'non-empty text'}"
                )


def first(trials: list[dict]) -> dict:
    """The trial whose settings stand for the plan's (the arms differ in the axes only)."""
    if not trials:
        raise ValueError("note_vs_run: no trials: a plan has at least one")
    return trials[0]


def values(trials: list[dict], fn) -> str:
    """The distinct values of fn(trial) over the plan, in plan order: one value, or 'a / b / c'."""
    seen = list(dict.fromkeys(str(fn(t)) for t in trials))
    return " / ".join(seen)


def seeds(trials: list[dict]) -> list[int]:
    return sorted({t["train"].seed for t in trials})


def model(g) -> str:
    """The architecture as built, in words."""
    if g.arch == "nanogpt":
        kind = (
            f"nanoGPT model (LayerNorm, learned positions, GELU, {'tied' if g.tie_embeddings else 'untied'} "
            f"embeddings, bias={g.bias})"
        )
    else:
        attention = "RoPE" + (", QK norm" if g.qk_norm else "")
        mixer = {"attention": attention, "toeplitz": "multi-head Toeplitz mixer"}.get(g.mixer, f"mixer {g.mixer!r}")
        cap = f"logit softcap {g.logit_softcap:g}" if g.logit_softcap else "no logit softcap"
        kind = (
            f"nanochat-style GPT ({mixer}, RMSNorm, relu^2 MLP, {'tied' if g.tie_embeddings else 'untied'} "
            f"embeddings, {cap})"
        )
    heads = {"attention": f"{g.n_head} heads of {g.n_embd // g.n_head}", "toeplitz": f"{g.n_head} Toeplitz heads"}.get(
        g.mixer, f"mixer {g.mixer}"
    )
    return (
        f"{kind}: {g.n_layer} layers x {g.n_embd} wide, {heads}, MLP {g.mlp_hidden}, vocab {g.vocab_size:,}, "
        f"context {g.seq_len}, dropout {g.dropout:g}"
    )


def params(g) -> str:
    from trainables.model import count_params

    p = count_params(g)
    return f"{p['total']:,} parameters ({p['embedding']:,} embedding, {p['lm_head']:,} lm_head, {p['blocks']:,} blocks)"


def role_lrs(t: dict) -> dict:
    """The lr each part of the model trains at (embedding, lm_head, positions, matrices, other), read off the
    groups trainables.train.build_optimizers makes for a model built on the meta device (no memory, ~50 ms)."""
    key = (repr(t["gpt"]), repr(t["train"]))
    if key not in _ROLE_LRS:
        import torch

        from trainables.model import build_model
        from trainables.train import build_optimizers, lrs_by_role

        with torch.device("meta"):
            model = build_model(t["gpt"])
        _ROLE_LRS[key] = lrs_by_role(model, build_optimizers(model, t["train"]))
    return _ROLE_LRS[key]


_ROLE_LRS = {}  # (GPTConfig, TrainConfig) reprs -> role_lrs: the rows ask several times per trial


def tables(t: dict) -> str:
    """The embedding's and lm_head's lrs (one table when tied), and nanoGPT's position table's."""
    lr = role_lrs(t)
    text = (
        f"tied table {lr['lm_head']:.4g}"
        if t["gpt"].tie_embeddings
        else f"embedding {lr['embedding']:.4g}, lm_head {lr['lm_head']:.4g}"
    )
    return text + (f", positions {lr['positions']:.4g}" if "positions" in lr else "")


def optimizer(t: dict) -> str:
    """The optimizer groups as trainables.train.build_optimizers makes them."""
    tc, g = t["train"], t["gpt"]
    adam = f"betas ({tc.beta1:g}, {tc.beta2:g}), eps {tc.adam_eps:g}"
    decay = f"weight decay {tc.weight_decay:.4g}" + (" falling linearly to 0" if tc.wd_schedule == "linear" else "")
    decayed = "the blocks' matrices" + (" and the embeddings" if g.arch == "nanogpt" else "")
    clip = f"clip {tc.grad_clip:g}" if tc.grad_clip > 0 else "no clipping"
    if tc.optimizer == "muon":
        momentum = (
            f"momentum 0.85 to 0.95 over {tc.muon_momentum_warmup} steps"
            if tc.muon_momentum_warmup
            else "momentum 0.95"
        )
        return (
            f"Muon (torch.optim.Muon) lr {tc.lr:g} on the blocks' matrices ({tc.muon_adjust_lr} lr scaling, "
            f"{momentum}, {decay}); AdamW {tables(t)}, {adam}, no decay; {clip}"
        )
    return f"AdamW: matrices lr {tc.lr:g}, {tables(t)}; {adam}; {decay} on {decayed}; {clip}"


def schedule(t: dict) -> str:
    tc, steps = t["train"], t["tokens"] // t["per_step"]
    warmup = f"warmup {tc.warmup_steps:,} steps (lr x (step+1)/{tc.warmup_steps})" if tc.warmup_steps else "no warmup"
    if tc.schedule == "cosine":
        return f"{warmup}, then cosine to {tc.min_lr_frac:g} x lr at step {steps:,}"
    warmdown = max(1, round(tc.warmdown_frac * steps))
    return f"{warmup}, constant, then linear to {tc.min_lr_frac:g} x lr over the last {warmdown:,} of {steps:,} steps"


def batch(t: dict, workers: int) -> str:
    tc, g = t["train"], t["gpt"]
    micro = tc.batch_size * g.seq_len * workers
    parts = [f"{tc.batch_size} x {g.seq_len} tokens"] + ([f"{workers} workers"] if workers > 1 else [])
    if t["per_step"] > micro:
        parts.append(f"{t['per_step'] // micro} micro-steps")
    return f"{' x '.join(parts)} = {t['per_step']:,} tokens per step"


def steps(t: dict) -> str:
    return f"{t['tokens'] // t['per_step']:,} steps, {t['tokens']:,} tokens"


def precision(tc) -> str:
    dtype = {"bfloat16": "bf16 autocast", "float32": "fp32", "auto": "bf16 autocast on a GPU with bf16, else fp32"}[
        tc.dtype
    ]
    return f"{dtype} (fp32 weights), {'torch.compile' if tc.compile else 'eager'}"


def data(tc) -> str:
    return f"{tc.corpus}, tokenizer {tc.tokenizer}; val: 5% of the documents, chosen by a hash of each"


def loader(t: dict, trials: list[dict]) -> str:
    g = t["gpt"]
    return (
        f"windows of {g.seq_len} tokens at multiples of {g.seq_len} of the train stream (each document after "
        f"a BOS token), in a fresh order each epoch from (data_seed, epoch), whatever the model; data seeds "
        f"{', '.join(map(str, sorted({t['train'].data_seed for t in trials})))}"
    )


def evaluation(t: dict) -> str:
    tc, g = t["train"], t["gpt"]
    return (
        f"every {tc.eval_every:,} steps and at the end: val loss and bpb over the first {tc.eval_batches} batches "
        f"of {tc.batch_size} x {g.seq_len} val windows (up to {tc.eval_batches * tc.batch_size * g.seq_len:,} "
        f"tokens), the same windows at every eval; final and best val kept"
    )
