"""The nanogpt flavour (arch="nanogpt") against nanoGPT's model.py written out (nanogpt_reference.py): a state dict
with nanoGPT's names and shapes loads with strict=True and gives its logits; softmax1 is the formula; the counts,
the optimizer groups, the probes and a short training run cover it. The contract suite (test_model_contract.py)
runs it too: causality, loss, gradients, KV-cached generation."""

import io
import math

import pytest
import torch
from model_helpers import NANOGPT, build, tokens
from nanogpt_reference import nanogpt_logits, nanogpt_shapes, random_nanogpt_state_dict

from trainables.model import GPT, GPTConfig, NanoGPT, build_model, count_params, flops_per_token, nanohead_split

SHAPE = dict(vocab_size=101, n_layer=3, n_embd=64, n_head=4, seq_len=32)


def config(**kw) -> GPTConfig:
    return GPTConfig(**{**NANOGPT, "tie_embeddings": True, **SHAPE, **kw})


def saved(sd: dict) -> dict:
    """What torch.save then torch.load(weights_only=True) hands back: a checkpoint on disk, tied tensors kept tied."""
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ----------------------------------------------------------------------------- a nanoGPT state dict loads and matches


@pytest.mark.parametrize("bias", [False, True], ids=["bias_false", "bias_true"])
@pytest.mark.parametrize("backend", ["sdpa", "manual"])
def test_nanogpt_state_dict_loads_strict_and_gives_its_logits(bias, backend):
    cfg = config(bias=bias, attn_backend=backend)
    sd = saved(random_nanogpt_state_dict(nanogpt_shapes(101, 32, 3, 64, bias), seed=1))
    model = build_model(cfg).eval()
    model.load_state_dict(sd, strict=True)  # every name and shape of nanoGPT's, nothing more
    idx = tokens(cfg, 3, 32)
    with torch.no_grad():
        got = model(idx)
    ref = nanogpt_logits(sd, cfg.n_head, idx)
    assert got.dtype == torch.float32 and got.shape == (3, 32, 101)
    assert ref.abs().max() > 1, "the reference logits are too small to tell anything apart"
    err = (got.double() - ref).abs().max().item()
    assert err < 1e-4, f"max |model - nanoGPT| = {err:.2e}"
    # the state dict the model saves is nanoGPT's, name for name and shape for shape
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == nanogpt_shapes(101, 32, 3, 64, bias)


def test_the_loss_is_nanogpts_cross_entropy():
    cfg = config()
    sd = random_nanogpt_state_dict(nanogpt_shapes(101, 32, 3, 64, False), seed=2)
    model = build_model(cfg).eval()
    model.load_state_dict(sd)
    idx, targets = tokens(cfg, 2, 20), tokens(cfg, 2, 20, seed=3)
    targets[0, :4] = -1  # ignore_index=-1, as nanoGPT's F.cross_entropy
    logits = nanogpt_logits(sd, cfg.n_head, idx)
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    valid = targets != -1
    want = -logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)[valid].mean()
    with torch.no_grad():
        assert model(idx, targets).item() == pytest.approx(want.item(), rel=1e-5)


def test_tied_weights_share_storage_and_gradients():
    model = build_model(config())
    wte, head = model.transformer.wte.weight, model.lm_head.weight
    assert wte is head and wte.data_ptr() == head.data_ptr()
    model.load_state_dict(saved(random_nanogpt_state_dict(nanogpt_shapes(101, 32, 3, 64, False), seed=4)))
    assert model.transformer.wte.weight.data_ptr() == model.lm_head.weight.data_ptr()  # still one tensor after loading
    untied = build_model(config(tie_embeddings=False))
    assert untied.transformer.wte.weight.data_ptr() != untied.lm_head.weight.data_ptr()
    # one parameter gets the gradient of both uses: the lookup's rows and the head's
    idx = tokens(model.cfg, 2, 8)
    model(idx, tokens(model.cfg, 2, 8, seed=1)).backward()
    grad = model.transformer.wte.weight.grad
    unused = sorted(set(range(101)) - set(idx.flatten().tolist()))
    assert grad[unused].abs().sum() > 0, "rows never looked up must still get the lm_head's gradient"


# ----------------------------------------------------------------------------- softmax1


@pytest.mark.parametrize("backend", ["sdpa", "manual"])
def test_softmax1_is_the_formula_and_changes_the_model(backend):
    """exp(s_i) / (1 + sum_j exp(s_j)) written out; under SDPA it runs as a padded null key and query."""
    sd = random_nanogpt_state_dict(nanogpt_shapes(101, 32, 3, 64, True), seed=5)
    idx = tokens(config(), 2, 32)
    logits = {}
    for on in (False, True):
        model = build_model(config(bias=True, softmax1=on, attn_backend=backend)).eval()
        model.load_state_dict(sd)
        with torch.no_grad():
            logits[on] = model(idx).double()
        assert (logits[on] - nanogpt_logits(sd, 4, idx, softmax1=on)).abs().max().item() < 1e-4
    assert (logits[True] - logits[False]).abs().max().item() > 1e-2, "softmax1 gave softmax's logits"


def test_causal():
    model = build(config(softmax1=True), seed=6)
    idx = tokens(model.cfg, 2, 24)
    later = idx.clone()
    later[:, 13:] = (later[:, 13:] + 1) % 101
    with torch.no_grad():
        a, b = model(idx), model(later)
    assert (a[:, :13] - b[:, :13]).abs().max().item() < 1e-12
    assert (a[:, 13:] - b[:, 13:]).abs().max().item() > 1e-3


# ----------------------------------------------------------------------------- configs


def test_config_picks_the_architecture_and_refuses_what_it_lacks():
    assert GPTConfig().arch == "nanochat" and GPTConfig().bias is False
    assert isinstance(build_model(config()), NanoGPT) and isinstance(build_model(GPTConfig(**SHAPE)), GPT)
    refusals = {
        "arch": dict(arch="gpt2"),
        "bias": dict(arch="nanochat", qk_norm=True, logit_softcap=15.0, bias=True),
        "qk_norm": dict(qk_norm=True),
        "logit_softcap": dict(logit_softcap=15.0),
        "nanohead_proportion": dict(nanohead_proportion=0.25),
        "n_kv_head": dict(n_kv_head=2),
        "mixer": dict(mixer="toeplitz"),
    }
    for field, kw in refusals.items():
        with pytest.raises(ValueError) as e:
            config(**kw)
        msg = str(e.value)
        assert msg.startswith(f"GPTConfig.{field}=") and "\n" not in msg, msg
    with pytest.raises(ValueError, match="build_model"):
        GPT(config())
    with pytest.raises(ValueError, match="build_model"):
        NanoGPT(GPTConfig(**SHAPE))


def test_heads_of_any_width():
    """No RoPE, so a head may be odd-sized (nanochat refuses it); the split the probes and the dry run read."""
    cfg = config(n_embd=63, n_head=3)
    assert nanohead_split(cfg)[:4] == (3, 21, 0, cfg.nanohead_dim)
    with pytest.raises(ValueError, match="even"):
        GPTConfig(**{**SHAPE, "n_embd": 63, "n_head": 3})
    model = build(cfg, seed=7)
    assert model(tokens(cfg, 1, 8)).shape == (1, 8, 101)


# ----------------------------------------------------------------------------- parameters and FLOPs


@pytest.mark.parametrize(
    "kw",
    [{}, dict(bias=True), dict(tie_embeddings=False), dict(bias=True, mlp_ratio=2.5, seq_len=48)],
    ids=["plain", "bias", "untied", "bias_mlp_seq"],
)
def test_count_params_equals_numel(kw):
    cfg = config(**kw)
    model = build_model(cfg)
    p = count_params(cfg)
    numel = {n: t.numel() for n, t in model.named_parameters()}  # the tied weight once, under transformer.wte
    assert p["total"] == sum(numel.values())
    assert p["embedding"] == numel["transformer.wte.weight"] + numel["transformer.wpe.weight"]
    assert p["lm_head"] == numel.get("lm_head.weight", 0)
    assert p["mixer"] == sum(v for n, v in numel.items() if ".attn." in n)
    assert p["mlp"] == sum(v for n, v in numel.items() if ".mlp." in n)
    assert p["blocks"] == sum(v for n, v in numel.items() if n.startswith(("transformer.h.", "transformer.ln_f")))


def test_flops_per_token_is_nanogpts_estimate():
    """nanoGPT's estimate_mfu: 6 N + 12 L H Q T, N = get_num_params() = every parameter but wpe (the tied wte counts,
    as the lm_head's matmul). The paper shape, by hand: N = 50257 x 768 + 6 x 12 x 768^2 + 13 x 768 LayerNorm weights."""
    cfg = config(vocab_size=50257, n_layer=6, n_head=6, n_embd=768, seq_len=256)
    N = 50257 * 768 + 6 * (12 * 768 * 768 + 2 * 768) + 768
    assert flops_per_token(cfg) == 6 * N + 12 * 6 * 6 * 128 * 256
    # untied: the input table is a lookup, not a matmul (the project's rule for every arch)
    untied = config(tie_embeddings=False)
    numel = sum(p.numel() for p in build_model(untied).parameters())
    assert flops_per_token(untied) == 6 * (numel - 101 * 64 - 32 * 64) + 12 * 3 * 64 * 32


# ----------------------------------------------------------------------------- training interfaces


def test_optimizer_groups_are_nanogpts():
    """nanoGPT's configure_optimizers: every 2-D tensor decays, every 1-D one (LayerNorms, biases) does not; with
    embedding_lr = lm_head_lr = lr one lr for all. Every parameter in exactly one group."""
    from trainables.train import TrainConfig, build_optimizers

    model = build_model(config(bias=True))
    (opt,) = build_optimizers(model, TrainConfig(lr=1e-3, embedding_lr=1e-3, lm_head_lr=1e-3, weight_decay=0.1))
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    assert decay == {id(p) for p in model.parameters() if p.dim() >= 2}
    assert {g["lr"] for g in opt.param_groups} == {1e-3}
    # nanochat keeps its own rule: no decay on the embedding or the lm_head
    nanochat = GPT(GPTConfig(**SHAPE))
    (opt,) = build_optimizers(nanochat, TrainConfig(weight_decay=0.1))
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    assert id(nanochat.transformer.wte.weight) not in decay and id(nanochat.lm_head.weight) not in decay


@pytest.mark.parametrize("softmax1", [False, True])
def test_probes_run_on_nanogpt(softmax1):
    """The attention probes read nanoGPT's layers: the probabilities reproduce each layer's output, the ablation
    shortcut reproduces the loss, softmax1 rows sum to less than 1."""
    from trainables.probes import _block_inputs, _loss_from_layer, attention_probs, run_probes

    cfg = config(bias=True, softmax1=softmax1)
    model = build(cfg, seed=8)
    idx, targets = tokens(cfg, 2, 16), tokens(cfg, 2, 16, seed=9)
    seen = {}
    hooks = [
        b.attn.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, (a[0], out)))
        for i, b in enumerate(model.transformer.h)
    ]
    with torch.no_grad():
        model(idx)
    for h in hooks:
        h.remove()
    for i, p in enumerate(attention_probs(model, idx)):
        attn = model.transformer.h[i].attn
        x, out = seen[i]
        rows = p.sum(-1)
        assert torch.all(rows < 1) if softmax1 else torch.allclose(rows, torch.ones_like(rows))
        with torch.no_grad():
            v = attn.c_attn(x)[..., 2 * cfg.n_embd :].view(2, 16, cfg.n_head, -1).transpose(1, 2)
            assert torch.allclose(attn.c_proj((p @ v).transpose(1, 2).reshape(2, 16, -1)), out, atol=1e-10)
    with torch.no_grad():
        inputs, loss = _block_inputs(model, idx, targets)
        assert _loss_from_layer(model, inputs, 0, targets) == loss
    scalars, details = run_probes(model, [(idx, targets)], cfg.seq_len, batch_size=2, batches=1)
    assert details["total_heads"] == cfg.n_layer * cfg.n_head
    assert (scalars["probe_attn_mass"] < 1) == softmax1 and math.isfinite(scalars["probe_w8a8_delta"])


def test_train_learns_and_generates(token_cache, tmp_path):
    """trainables.train runs the flavour unchanged: the loss falls, the record says what was built, samples come out."""
    import json

    from trainables.train import train

    conf = dict(
        NANOGPT,
        tie_embeddings=True,
        n_layer=2,
        n_embd=64,
        n_head=2,
        seq_len=64,
        batch_size=8,
        max_steps=40,
        eval_every=20,
        eval_batches=2,
        tokenizer="bpe:512",
        lr=3e-3,
        warmup_steps=5,
        sample_tokens=8,
    )
    final = train(conf, out_dir=str(tmp_path), log=lambda m: None)
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["val_loss"] < math.log(512) - 0.5  # clearly below a uniform guess over bpe:512's tokens
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["model"]["arch"] == "nanogpt" and record["params"]["total"] == final["params_total"]
    assert "probe_sink_mass" in final
    assert len(json.loads((tmp_path / "samples.json").read_text())["samples"]) == 3
