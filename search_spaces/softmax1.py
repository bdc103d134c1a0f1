"""softmax1 / quiet attention (seed 004): exp(x_i) / (1 + sum_j exp(x_j)) in every head, on nanoGPT's baby GPT.

Pre-registered verdict: "interesting" when perplexity improves by at least 5%. Samples from both arms.
"""
from .common import seed_suffix

AXES = {"softmax1": [False, True]}
# The note's baby GPT (nanoGPT train_shakespeare_char with n_embd doubled): 6 layers, 6 heads, width 768,
# block 256, gpt2 encoding, dropout 0.2, AdamW lr 1e-3 beta2 0.99, 100 warmup, cosine to 1e-4, clip 1.
PAPER = dict(n_layer=6, n_head=6, n_embd=768, seq_len=256, tokenizer="gpt2", dropout=0.2, lr=1e-3, beta2=0.99,
             warmup_steps=100, min_lr_frac=0.1, grad_clip=1.0, batch_size=64, tie_embeddings=True,
             embedding_lr=1e-3, lm_head_lr=1e-3, weight_decay=0.1)


def base(profile) -> dict:
    keys = {**profile.train_keys(), **PAPER, "budget": None, "sample_tokens": 48}
    if profile.name == "smoke":
        keys.update(n_layer=2, n_head=2, n_embd=64, seq_len=64, batch_size=8, tokenizer=profile.tokenizer, warmup_steps=5)
    elif profile.name == "cpu":  # the baby GPT scaled to a laptop: same depth and heads, narrower, own vocab
        keys.update(n_embd=192, seq_len=128, batch_size=16, tokenizer=profile.tokenizer, warmup_steps=30, lr=3e-3,
                    embedding_lr=3e-3, lm_head_lr=3e-3)
    elif profile.name == "gpu":
        keys.update(max_steps=5000, eval_every=250)
    else:
        keys.update(max_steps=100_000, eval_every=2000)
    return keys


def resolve(config: dict) -> dict:
    return config


def variant(config: dict) -> str:
    return "softmax1" if config["softmax1"] else "softmax"


def trial_name(config: dict) -> str:
    return f"softmax1_ab_{variant(config)}" + seed_suffix(config)
