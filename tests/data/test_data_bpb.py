import json
import math

import pytest
import torch
import torch.nn.functional as F

from trainables.data import evaluate_bpb, get_tokenizer, prepare_tokens, split_documents

STORIES = [
    "Once upon a time there was a little red hen who lived on a farm.",
    "The sun rose over the hills and the birds began to sing.",
    "Tom and his sister walked to the river to look for frogs.",
    "A small boat drifted slowly across the quiet lake at dawn.",
    "Grandma baked bread every Sunday, and the whole house smelled warm.",
    "The old clock in the hall struck twelve, and everyone went to bed.",
    "Rain tapped on the window while the cat slept by the fire.",
    "Naïve explorers paid two euros (€2) for a café au lait.",
]
B, T = 2, 4


class RepeatBigram(torch.nn.Module):
    """A fixed bigram model: logit 2 for repeating the previous token, 1 for BOS, 0 otherwise."""

    def __init__(self, vocab_size: int, bos: int):
        super().__init__()
        self.vocab_size, self.bos = vocab_size, bos

    def forward(self, x, y, loss_reduction="mean"):
        # float64 so the comparison with the hand computation is exact to ~1e-12, not float32's ~1e-6
        logits = torch.zeros(*x.shape, self.vocab_size, dtype=torch.float64)
        logits[..., self.bos] = 1.0
        logits.scatter_(-1, x.unsqueeze(-1), 2.0)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction=loss_reduction)
        return loss.view(x.shape) if loss_reduction == "none" else loss


def hand_bpb(stream, V, bos, token_len, n_targets):
    """Sum over targets y (after a) of log Z_a - logit(a, y), skipping BOS targets, by hand."""
    nats, nbytes, count = 0.0, 0, 0
    for a, y in zip(stream[:n_targets], stream[1 : n_targets + 1]):
        if y == bos:
            continue
        z = math.exp(2) + (V - 1) if a == bos else math.exp(2) + math.e + (V - 2)
        nats += math.log(z) - (2.0 if y == a else 0.0)
        nbytes += token_len(y)
        count += 1
    return nats / count, nats / (math.log(2) * nbytes), count, nbytes


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    d = tmp_path_factory.mktemp("stories")
    src = d / "stories.jsonl"
    src.write_text("".join(json.dumps({"text": s}) + "\n" for s in STORIES), encoding="utf-8")
    return prepare_tokens(str(src), "gpt2", cache_dir=d / "cache", val_fraction=0.3)


def _val_stream(val_fraction=0.3):
    gpt2 = get_tokenizer("gpt2")
    stream = []
    for doc in split_documents(STORIES, val_fraction)[1]:
        stream += [50256] + gpt2.encode_ordinary(doc)
    return stream


def test_bpb_equals_hand_computation(stories):
    stream, gpt2 = _val_stream(), get_tokenizer("gpt2")
    assert stories.val_tokens().tolist() == stream and len(stream) > 3 * B * T
    token_len = lambda t: len(gpt2.decode_single_token_bytes(t))  # noqa: E731
    n_targets = (len(stream) - 1) // T * T  # every full window, last batch partial
    loss, bpb, count, nbytes = hand_bpb(stream, 50257, 50256, token_len, n_targets)
    model = RepeatBigram(50257, 50256).train()
    got = evaluate_bpb(model, stories, batch_size=B, seq_len=T)
    assert got["tokens"] == count and got["bytes"] == nbytes
    assert got["val_loss"] == pytest.approx(loss, rel=1e-9)
    assert got["val_bpb"] == pytest.approx(bpb, rel=1e-9)
    assert model.training  # evaluate_bpb restores the mode it found


def test_max_batches_and_rank_partition(stories):
    stream, gpt2 = _val_stream(), get_tokenizer("gpt2")
    token_len = lambda t: len(gpt2.decode_single_token_bytes(t))  # noqa: E731
    model = RepeatBigram(50257, 50256)
    _, bpb, count, nbytes = hand_bpb(stream, 50257, 50256, token_len, n_targets=B * T)
    got = evaluate_bpb(model, stories, batch_size=B, seq_len=T, max_batches=1)
    assert (got["tokens"], got["bytes"]) == (count, nbytes)
    assert got["val_bpb"] == pytest.approx(bpb, rel=1e-9)
    # two ranks (no process group here): their partial sums add up to the whole
    whole = evaluate_bpb(model, stories, batch_size=B, seq_len=T)
    parts = [evaluate_bpb(model, stories, B, T, rank=r, world_size=2) for r in range(2)]
    assert sum(p["bytes"] for p in parts) == whole["bytes"]
    assert sum(p["tokens"] for p in parts) == whole["tokens"]
    nats = sum(p["val_loss"] * p["tokens"] for p in parts)
    assert nats == pytest.approx(whole["val_loss"] * whole["tokens"], rel=1e-9)


def test_uniform_model_scores_log2_vocab_bits_per_token(stories):
    """A uniform model pays log2(V) bits per token: bpb = tokens * log2(V) / bytes."""

    class Uniform(torch.nn.Module):
        def forward(self, x, y, loss_reduction="mean"):
            loss = torch.full(x.shape, math.log(50257.0))
            return loss if loss_reduction == "none" else loss.mean()

    got = evaluate_bpb(Uniform(), stories, batch_size=B, seq_len=T)
    assert got["val_loss"] == pytest.approx(math.log(50257))
    assert got["val_bpb"] == pytest.approx(got["tokens"] * math.log2(50257) / got["bytes"])
