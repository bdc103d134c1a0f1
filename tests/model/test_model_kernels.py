"""The hand-written autograd functions that keep the fp32 eager CPU path fast (RMSNorm, relu^2, the fused
softcap + cross-entropy), each checked in value and gradient against its formula written out in float64."""

import math

import pytest
import torch

from trainables.model.attention import norm
from trainables.model.gpt import relu_squared, softcap_cross_entropy


def grad_of(fn, x, g):
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    (gx,) = torch.autograd.grad(out, x, g)
    return out.detach(), gx


@pytest.mark.parametrize("shape", [(4, 7, 256), (2, 5, 4, 64), (2, 5, 40, 3), (3, 1)])
def test_norm_matches_the_rms_formula(shape):
    torch.manual_seed(0)
    x, g = torch.randn(shape) * 3, torch.randn(shape)
    eps = torch.finfo(torch.float32).eps

    def formula(t):
        return t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + eps)

    y, gx = grad_of(norm, x, g)
    y_ref, gx_ref = grad_of(formula, x.double(), g.double())
    assert torch.allclose(y.double(), y_ref, atol=1e-6)
    assert torch.allclose(gx.double(), gx_ref, atol=1e-5)


def test_norm_is_unit_rms_and_scale_free():
    x = torch.randn(16, 32)
    assert torch.allclose(norm(x).pow(2).mean(-1), torch.ones(16), atol=1e-5)
    assert torch.allclose(norm(7 * x), norm(x), atol=1e-6)


def test_relu_squared_value_and_gradient():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    y, gx = grad_of(relu_squared, x, g)
    assert y.tolist() == [0.0, 0.0, 0.0, 0.25, 9.0]
    assert gx.tolist() == [0.0, 0.0, 0.0, 4 * 2 * 0.5, 5 * 2 * 3.0]  # d/dx relu(x)^2 = 2 relu(x)


def naive_loss(logits, targets, cap):
    """Per-position -log softmax(cap tanh(z / cap))[target] in float64, written out; 0 where target == -1."""
    z = logits.double()
    y = cap * torch.tanh(z / cap) if cap else z
    logp = y - torch.logsumexp(y, dim=-1, keepdim=True)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(targets == -1, torch.zeros_like(picked), -picked)


@pytest.mark.parametrize("cap", [15.0, 2.0, None])
@pytest.mark.parametrize("vocab", [50, 4096, 70_000])  # 70,000: chunks of 7 rows, the last one short
def test_softcap_cross_entropy_matches_the_formula(cap, vocab):
    torch.manual_seed(1)
    B, T = 2, 30
    logits = torch.randn(B, T, vocab) * 20  # well past the cap: the tanh saturates
    targets = torch.randint(0, vocab, (B, T))
    targets[0, ::4] = -1
    valid = (targets != -1).sum()

    loss, g_loss = grad_of(lambda z: softcap_cross_entropy(z, targets, cap), logits, torch.tensor(1.0))
    ref, g_ref = grad_of(
        lambda z: naive_loss(z, targets, cap).sum() / valid, logits.double(), torch.tensor(1.0, dtype=torch.float64)
    )
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(g_loss.double(), g_ref, atol=1e-8)
    assert (g_loss[0, ::4] == 0).all(), "ignored positions get no gradient"

    w = torch.rand(B, T)  # reduction="none": per-position losses, any upstream gradient
    per, g_per = grad_of(lambda z: softcap_cross_entropy(z, targets, cap, reduction="none"), logits, w)
    per_ref, g_per_ref = grad_of(lambda z: naive_loss(z, targets, cap), logits.double(), w.double())
    assert per.shape == (B, T)
    assert torch.allclose(per.double(), per_ref, atol=2e-5)
    assert torch.allclose(g_per.double(), g_per_ref, atol=1e-6)  # float32 probabilities, weights up to 1


def test_softcap_cross_entropy_without_grad_and_in_bfloat16():
    torch.manual_seed(2)
    logits, targets = torch.randn(3, 9, 100) * 5, torch.randint(0, 100, (3, 9))
    with torch.no_grad():
        assert softcap_cross_entropy(logits, targets, 15.0).item() == pytest.approx(
            naive_loss(logits, targets, 15.0).mean().item(), rel=1e-6
        )
    z = logits.bfloat16().requires_grad_()
    loss = softcap_cross_entropy(z, targets, 15.0)
    loss.backward()
    assert loss.dtype == torch.float32 and z.grad.dtype == torch.bfloat16
    assert loss.item() == pytest.approx(naive_loss(z.detach().float(), targets, 15.0).mean().item(), rel=1e-5)


def test_softcap_cross_entropy_backward_twice_gives_the_same_gradient():
    logits = torch.randn(4, 10, requires_grad=True)
    targets = torch.tensor([1, 2, -1, 3])
    loss = softcap_cross_entropy(logits, targets, 15.0)
    (g1,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, logits)
    assert torch.equal(g1, g2)


def test_uniform_logits_give_log_vocab():
    """A hand computation: equal logits -> loss ln(V) for every position, whatever the cap."""
    V = 1000
    loss = softcap_cross_entropy(torch.zeros(2, 5, V), torch.randint(0, V, (2, 5)), 15.0)
    assert loss.item() == pytest.approx(math.log(V), rel=1e-6)


def test_the_composed_branch_matches_the_formula_too():
    """On a GPU softcap_cross_entropy is the plain composition (inductor fuses it there): same numbers."""
    from trainables.model.gpt import _composed_softcap_cross_entropy

    torch.manual_seed(3)
    logits, targets = torch.randn(2, 6, 300) * 20, torch.randint(0, 300, (2, 6))
    targets[1, 2] = -1
    loss, g = grad_of(
        lambda z: _composed_softcap_cross_entropy(z.reshape(-1, 300), targets.reshape(-1), 15.0, "mean"),
        logits,
        torch.tensor(1.0),
    )
    ref, g_ref = grad_of(
        lambda z: naive_loss(z, targets, 15.0).sum() / 11, logits.double(), torch.tensor(1.0, dtype=torch.float64)
    )
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(g.double(), g_ref, atol=1e-8)


@pytest.mark.parametrize("cap", [15.0, None, 50.0])  # 50: above the cap that skips the max pass, the composition
def test_compiled_softcap_cross_entropy_matches_the_formula(cap):
    """Under torch.compile on a CPU the loss is _CompiledSoftcapCrossEntropy (or the composition): same numbers."""
    torch.manual_seed(4)
    B, T, V = 2, 12, 300
    logits = torch.randn(B, T, V) * 20
    targets = torch.randint(0, V, (B, T))
    targets[0, ::3] = -1
    valid = (targets != -1).sum()
    fn = torch.compile(lambda z, reduction: softcap_cross_entropy(z, targets, cap, reduction))

    loss, g = grad_of(lambda z: fn(z, "mean"), logits, torch.tensor(1.0))
    ref, g_ref = grad_of(
        lambda z: naive_loss(z, targets, cap).sum() / valid, logits.double(), torch.tensor(1.0, dtype=torch.float64)
    )
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(g.double(), g_ref, atol=1e-8)
    assert (g[0, ::3] == 0).all()

    w = torch.rand(B, T)
    per, g_per = grad_of(lambda z: fn(z, "none"), logits, w)
    per_ref, g_per_ref = grad_of(lambda z: naive_loss(z, targets, cap), logits.double(), w.double())
    assert per.shape == (B, T)
    assert torch.allclose(per.double(), per_ref, atol=2e-5)
    assert torch.allclose(g_per.double(), g_per_ref, atol=1e-6)

    z = logits.bfloat16().requires_grad_()  # bf16 logits (autocast): float32 loss, bf16 gradient
    loss = fn(z, "mean")
    loss.backward()
    assert loss.dtype == torch.float32 and z.grad.dtype == torch.bfloat16
    assert loss.item() == pytest.approx(
        naive_loss(z.detach().float(), targets, cap).sum().item() / valid.item(), rel=1e-5
    )


@pytest.mark.parametrize("extra", [{}, dict(nanohead_proportion=0.25, nanohead_dim=4, n_kv_head=1)])
def test_compiled_model_loss_matches_eager(extra):
    """Under torch.compile on a CPU the model takes its compile-only forms (one q/k/v matmul, QK norm before
    RoPE, RoPE by halves, _CompiledSoftcapCrossEntropy): the compiled model's loss and every gradient are the
    eager model's. The extra config has nano heads and GQA (three different q, k, v widths)."""
    from trainables.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=2, seq_len=16, **extra))
    params = [p for _, p in model.named_parameters()]
    idx, targets = torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16))
    targets[0, :3] = -1
    eager = model(idx, targets)
    g_eager = torch.autograd.grad(eager, params)
    compiled = torch.compile(model)(idx, targets)
    g_compiled = torch.autograd.grad(compiled, params)
    assert compiled.item() == pytest.approx(eager.item(), rel=1e-5)
    for (name, _), a, b in zip(model.named_parameters(), g_compiled, g_eager):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), name
