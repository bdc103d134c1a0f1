"""A tiny model memorises one fixed batch: the whole forward/backward is wired to learn."""

import pytest
import torch

from trainables.model import GPT, GPTConfig

TINY = dict(vocab_size=64, n_layer=2, n_embd=32, n_head=4, seq_len=16)


@pytest.mark.parametrize(
    "ov",
    [
        dict(),
        dict(nanohead_proportion=0.25, softmax1=True, n_kv_head=2),
        dict(mixer="toeplitz", toep_mean=True, toep_proj=True),
        dict(mixer="toeplitz"),
    ],
    ids=["attention", "nano_softmax1_gqa", "toeplitz_mean_proj", "toeplitz_plain"],
)
def test_overfits_one_batch(ov):
    torch.manual_seed(0)
    cfg = GPTConfig(**TINY, **ov)
    model = GPT(cfg)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, cfg.vocab_size, (4, cfg.seq_len + 1), generator=g)
    x, y = data[:, :-1], data[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    first = None
    for _ in range(150):
        loss = model(x, y)
        if first is None:
            first = loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        final = model(x, y).item()
    assert abs(first - torch.log(torch.tensor(float(cfg.vocab_size))).item()) < 0.5, first  # starts near chance
    assert final < 0.3 * first, f"loss {first:.3f} -> {final:.3f}"
