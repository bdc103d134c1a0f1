"""SDPA with head dims zero-padded to a multiple of 8 (the path nano heads take on CUDA, where a dim of 3 would
otherwise send SDPA to its math kernel) gives the attention of the unpadded heads.

The padded path runs here on the CPU (attend(..., pad_head_dim=True)); the reference is the T x T formula
written out below in float64: softmax(q k^T / sqrt(d), causal) v, and softmax1 with its extra logit of 0."""

import math

import pytest
import torch

from trainables.model.attention import attend


def naive_attention(q, k, v, softmax1_: bool) -> torch.Tensor:
    """q [B, H, Tq, d], k/v [B, Hkv, Tk, d]; query i sits at position Tk - Tq + i and sees keys 0..that position."""
    q, k, v = (t.double() for t in (q, k, v))
    g = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    Tq, Tk = q.size(2), k.size(2)
    out = torch.zeros(q.shape[:3] + (v.size(-1),), dtype=torch.float64)
    for b in range(q.size(0)):
        for h in range(q.size(1)):
            for i in range(Tq):
                seen = Tk - Tq + i + 1
                scores = torch.stack([q[b, h, i] @ k[b, h, j] for j in range(seen)]) / math.sqrt(q.size(-1))
                e = torch.exp(scores)
                weights = e / ((1.0 if softmax1_ else 0.0) + e.sum())
                out[b, h, i] = (weights[:, None] * v[b, h, :seen]).sum(0)
    return out


CASES = [  # (query heads, kv heads, query positions, key positions)
    pytest.param(3, 3, 9, 9, id="mha"),
    pytest.param(4, 2, 9, 9, id="gqa"),
    pytest.param(2, 2, 3, 8, id="decode"),  # a KV cache: the last 3 positions of 8
]


@pytest.mark.parametrize("softmax1_", [False, True], ids=["softmax", "softmax1"])
@pytest.mark.parametrize("d", [2, 3, 5, 12])
@pytest.mark.parametrize("H, Hkv, Tq, Tk", CASES)
def test_padded_sdpa_equals_the_formula_and_the_unpadded_path(d, softmax1_, H, Hkv, Tq, Tk):
    gen = torch.Generator().manual_seed(d * 100 + H + Tq)
    q = torch.randn(2, H, Tq, d, generator=gen, requires_grad=True)
    k = torch.randn(2, Hkv, Tk, d, generator=gen, requires_grad=True)
    v = torch.randn(2, Hkv, Tk, d, generator=gen, requires_grad=True)
    padded = attend(q, k, v, softmax1_=softmax1_, backend="sdpa", pad_head_dim=True)
    plain = attend(q, k, v, softmax1_=softmax1_, backend="sdpa", pad_head_dim=False)
    assert padded.shape == (2, H, Tq, d)
    torch.testing.assert_close(padded.double(), naive_attention(q, k, v, softmax1_), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded, plain, rtol=1e-5, atol=1e-6)
    # the same gradients: the padded columns carry none back
    w = torch.randn(padded.shape, generator=gen)
    grads_padded = torch.autograd.grad((padded * w).sum(), (q, k, v))
    grads_plain = torch.autograd.grad((plain * w).sum(), (q, k, v))
    for a, b in zip(grads_padded, grads_plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pad_head_dim, kernel_dim", [(None, 3), (True, 8)], ids=["cpu-default", "padded"])
def test_what_runs_on_a_cpu(pad_head_dim, kernel_dim):
    """A CPU's fused SDPA kernel takes a head dim of 3 as it is (the README's table): the default leaves it unpadded
    there, and pad_head_dim=True hands the same kernel 8 columns."""
    from torch.profiler import profile

    q = torch.randn(1, 2, 6, 3)
    with profile(record_shapes=True) as prof:
        attend(q, q, q, softmax1_=False, backend="sdpa", pad_head_dim=pad_head_dim)
    calls = [e for e in prof.events() if e.name.startswith("aten::_scaled_dot_product")]
    assert [e.name for e in calls] == ["aten::_scaled_dot_product_flash_attention_for_cpu"]
    assert [shape[-1] for shape in calls[0].input_shapes[:3]] == [kernel_dim] * 3
