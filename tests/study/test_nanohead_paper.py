"""nanohead's `paper` profile is nanochat's scripts/base_train.py as notes 000/001 ran it (`--num-iterations=500`).

The references are nanochat's own numbers and formulas, written out here from karpathy/nanochat 98eed6d
(scripts/base_train.py, nanochat/gpt.py): the depth -> shape rule, the optimizer groups and their learning rates,
the lr / momentum / weight decay schedules, the batch. The achieved nano-head shares are hand arithmetic.
"""

import json
import math
import re

import pytest
from study_cli import parse_table, run_cli

V = 32768  # nanochat's tokenizer (scripts/tok_train.py: 2^15)


def hand_total(vocab: int, width: int, layers: int) -> int:
    """This GPT's parameters: embedding + lm_head + per block q, k, v, proj (4 C^2) and a 4x MLP (8 C^2)."""
    return 2 * vocab * width + 12 * layers * width * width


# ----------------------------------------------------------------------------- the shape rule


@pytest.mark.parametrize(
    "depth, shape",
    [
        (1, (1, 128, 1)),  # 64 -> nudged up to one 128-wide head
        (5, (5, 384, 3)),  # 320 -> 384
        (7, (7, 512, 4)),  # 448 -> 512
        (12, (12, 768, 6)),  # nanochat's d12: 768 wide, 6 heads
        (20, (20, 1280, 10)),  # the speedrun's d20
        (26, (26, 1664, 13)),  # the GPT-2 grade d26
    ],
)
def test_nanochat_shape_is_base_trains(depth, shape):
    from trainables.model.params import nanochat_shape

    assert nanochat_shape(depth, aspect_ratio=64, head_dim=128) == shape


def test_the_depth_is_the_one_nearest_50m():
    """runs/nanohead_experiment.py searched the depth whose model is nearest ~50M parameters. Here at vocab 32768:
    d6 = 384 wide: 35,782,656; d7 = 512 wide: 55,574,528; d8 = 512 wide: 58,720,256 -> d7."""
    from trainables.model.params import nanochat_depth

    totals = {d: hand_total(V, w, d) for d, w in ((6, 384), (7, 512), (8, 512))}
    assert totals == {6: 35_782_656, 7: 55_574_528, 8: 58_720_256}
    best = nanochat_depth(5e7, V, 128, aspect_ratio=64)
    assert (best.n_layer, best.n_embd, best.n_head) == (7, 512, 4)
    assert best.params["total"] == totals[7]
    # a trial config run alone (python -m trainables.train) sizes its model by the same rule
    from trainables.train import resolve_configs

    gpt, _ = resolve_configs(dict(budget=5e7, shape_rule="nanochat", head_dim=128, aspect_ratio=64), V)
    assert (gpt.n_layer, gpt.n_embd, gpt.n_head) == (7, 512, 4)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(shape_rule="chinchilla"), "TrainConfig.shape_rule='chinchilla': must be one of solver, nanochat"),
        (dict(shape_rule="nanochat"), "no budget reaches it"),  # dims given: nothing to size
        (dict(wd_schedule="cosine"), "TrainConfig.wd_schedule='cosine': must be one of constant, linear"),
        (
            dict(muon_adjust_lr="spectral"),
            "TrainConfig.muon_adjust_lr='spectral': must be one of match_rms_adamw, original",
        ),
    ],
)
def test_new_train_keys_refuse_bad_values(kwargs, words):
    from trainables.train import TrainConfig

    with pytest.raises(ValueError, match=re.escape(words)):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs", [dict(init="xavier"), dict(init="nanochat", tie_embeddings=True), dict(init="nanochat", mixer="toeplitz")]
)
def test_nanochat_init_is_for_nanochats_model(kwargs):
    from trainables.model import GPTConfig

    with pytest.raises(ValueError, match=r"GPTConfig\.init="):
        GPTConfig(**kwargs)


# ----------------------------------------------------------------------------- the plan


@pytest.fixture(scope="module")
def paper_trials():
    from study.catalog import STUDIES, get_profile
    from study.run import plan_trials

    return plan_trials(STUDIES["nanohead_grid"], get_profile("paper"), {}, 1, 1)


def test_paper_trains_base_trains_settings(paper_trials):
    width_scale = (512 / 768) ** -0.5  # base_train: AdamW lrs tuned at width 768, x (model_dim / 768)^-0.5
    for t in paper_trials:
        tc, g = t["train"], t["gpt"]
        assert (g.n_layer, g.n_embd, g.n_head, g.vocab_size, g.seq_len) == (7, 512, 4, V, 2048)
        assert g.init == "nanochat" and not g.tie_embeddings and g.qk_norm and g.logit_softcap == 15
        assert tc.optimizer == "muon" and tc.muon_adjust_lr == "original" and tc.lr == 0.02  # --matrix-lr
        assert tc.embedding_lr == pytest.approx(0.3 * width_scale) and tc.lm_head_lr == pytest.approx(
            0.004 * width_scale
        )
        assert tc.weight_decay == pytest.approx(0.2 * (12 / 7) ** 2)  # --weight-decay 0.2 tuned at d12, x (12/depth)^2
        assert (tc.beta1, tc.beta2, tc.adam_eps) == (0.8, 0.95, 1e-10)
        assert (tc.schedule, tc.warmup_steps, tc.warmdown_frac, tc.min_lr_frac) == ("linear", 0, 0.5, 0.0)
        assert (tc.muon_momentum_warmup, tc.wd_schedule, tc.grad_clip) == (300, "linear", 0.0)
        assert (tc.batch_size, tc.total_batch_tokens, tc.max_steps) == (32, 524_288, 500)  # 8 micro-steps of 32 x 2048
        assert (tc.dtype, tc.compile, tc.tokenizer) == ("bfloat16", True, "bpe:32768")
        assert t["tokens"] == 500 * 524_288


def test_a_set_value_is_the_one_used(paper_trials):
    """The size rules fill embedding_lr, lm_head_lr and weight_decay only where they are not given."""
    from study.catalog import STUDIES, get_profile
    from study.run import plan_trials

    trials = plan_trials(
        STUDIES["nanohead_grid"], get_profile("paper"), {"weight_decay": 0.1, "embedding_lr": 0.5}, 1, 1
    )
    assert {(t["train"].weight_decay, t["train"].embedding_lr) for t in trials} == {(0.1, 0.5)}
    deeper = plan_trials(STUDIES["nanohead_grid"], get_profile("paper"), {"budget": 1e8}, 1, 1)[0]
    # 1e8 at vocab 32768: d10 = 640 wide (91,095,040) is nearest; the rules follow the model
    assert (deeper["gpt"].n_layer, deeper["gpt"].n_embd) == (10, 640) and hand_total(V, 640, 10) == 91_095_040
    assert deeper["train"].weight_decay == pytest.approx(0.2 * (12 / 10) ** 2)
    assert deeper["train"].embedding_lr == pytest.approx(0.3 * (640 / 768) ** -0.5)


def test_the_optimizer_is_muon_for_the_blocks_and_adamw_for_the_tables(paper_trials):
    """The real 55.6M-parameter model: base_train's setup_optimizer groups, lrs, betas, eps and decay, and its init."""
    import torch

    from trainables.model import GPT
    from trainables.train import build_optimizers

    t = paper_trials[0]
    torch.manual_seed(0)
    model = GPT(t["gpt"])
    adamw, muon = build_optimizers(model, t["train"])
    scale = (512 / 768) ** -0.5
    by_param = {id(g["params"][0]): g for g in adamw.param_groups}
    emb, head = by_param[id(model.transformer.wte.weight)], by_param[id(model.lm_head.weight)]
    assert emb["lr"] == pytest.approx(0.3 * scale) and head["lr"] == pytest.approx(0.004 * scale)
    for g in (emb, head):
        assert g["betas"] == (0.8, 0.95) and g["eps"] == 1e-10 and g["weight_decay"] == 0.0
    assert len(adamw.param_groups) == 2
    (group,) = muon.param_groups
    matrices = [m.weight for m in model.transformer.h.modules() if isinstance(m, torch.nn.Linear)]
    assert len(matrices) == 7 * 6 and {id(p) for p in group["params"]} == {id(p) for p in matrices}
    assert group["lr"] == 0.02 and group["nesterov"] and group["adjust_lr_fn"] == "original"
    assert group["momentum"] == 0.85  # base_train's get_muon_momentum(0)
    assert group["weight_decay"] == pytest.approx(0.2 * (12 / 7) ** 2)
    # nanochat's init_weights: wte N(0, 1), lm_head N(0, 0.001), q/k/v/fc uniform of std 1/sqrt(512), projections 0
    assert model.transformer.wte.weight.std().item() == pytest.approx(1.0, rel=0.01)
    assert model.lm_head.weight.std().item() == pytest.approx(0.001, rel=0.01)
    block = model.transformer.h[0]
    for w in (block.mixer.c_q.weight, block.mixer.c_k.weight, block.mlp.c_fc.weight):
        assert w.abs().max().item() <= math.sqrt(3 / 512) and w.std().item() == pytest.approx(512**-0.5, rel=0.02)
    assert not block.mixer.c_proj.weight.any() and not block.mlp.c_proj.weight.any()


def test_schedules_are_base_trains():
    """get_lr_multiplier, get_muon_momentum and get_weight_decay of base_train, written out, at 500 iterations."""
    from study.catalog import STUDIES, get_profile
    from trainables.train import TrainConfig, lr_multiplier, muon_momentum, weight_decay_multiplier

    tc = TrainConfig.from_dict(STUDIES["nanohead_grid"].base_keys(get_profile("paper")))
    n, warmdown = 500, round(0.5 * 500)
    for it in range(n):
        lrm = 1.0 if it <= n - warmdown else (n - it) / warmdown  # warmup 0, final_lr_frac 0
        assert lr_multiplier(it, tc, n) == pytest.approx(lrm)
        frac = min(it / 300, 1)
        assert muon_momentum(it, tc) == pytest.approx((1 - frac) * 0.85 + frac * 0.95)
        assert weight_decay_multiplier(it, tc, n) == pytest.approx(1 - it / n)


def test_muon_trains_and_resumes(token_cache, tmp_path):
    """The loop with base_train's optimizer settings, at a tiny size: the loss falls, and a restore continues the
    same curve (momentum and decay follow the step)."""
    import shutil

    from trainables.train import train

    tiny = dict(
        n_layer=2,
        n_embd=64,
        n_head=2,
        seq_len=64,
        batch_size=8,
        max_steps=10,
        eval_every=5,
        eval_batches=2,
        tokenizer="bpe:512",
        init="nanochat",
        optimizer="muon",
        muon_adjust_lr="original",
        lr=0.02,
        embedding_lr=0.3,
        lm_head_lr=0.004,
        beta1=0.8,
        adam_eps=1e-10,
        weight_decay=0.2,
        wd_schedule="linear",
        muon_momentum_warmup=8,
        schedule="linear",
        warmup_steps=0,
        warmdown_frac=0.5,
        min_lr_frac=0.0,
        grad_clip=0.0,
        probes=False,
    )
    saved, full = {}, []

    def keep(metrics, checkpoint_dir):
        full.append(metrics)
        saved[metrics["step"]] = shutil.copytree(checkpoint_dir, tmp_path / f"ckpt{metrics['step']}")

    train(tiny, report=keep, log=lambda m: None)
    assert full[1]["val_bpb"] < full[0]["val_bpb"]
    resumed = []
    train(tiny, report=lambda m, c: resumed.append(m), restore=str(saved[5]), log=lambda m: None)
    assert resumed[-1]["val_bpb"] == pytest.approx(full[-1]["val_bpb"], abs=1e-5)


# ----------------------------------------------------------------------------- the achieved nano-head share

# At 512 wide with 4 normal heads, k nano heads of 3 leave 512 - 3k for the normal heads, which must split into
# 4 even widths: 512 - 3k divisible by 8, so k a multiple of 8. k nearest p x 512 / 3:
#   p=0.2: 34.1 -> 32 (share 96/512);  0.4: 68.3 -> 72 (216/512);  0.6: 102.4 -> 104 (312/512);  0.8: 136.5 -> 136 (408/512)
HAND = {0.0: (0, 0.0), 0.2: (32, 0.1875), 0.4: (72, 0.421875), 0.6: (104, 0.609375), 0.8: (136, 0.796875)}


def test_achieved_share_by_hand(paper_trials):
    from trainables.model import nanohead_split
    from trainables.train import nanohead_share

    for t in paper_trials:
        n_nano, share = HAND[t["config"]["nanohead_proportion"]]
        assert nanohead_split(t["gpt"]).n_nano == n_nano
        assert nanohead_share(t["gpt"]) == share


def test_achieved_share_is_recorded_and_plotted(token_cache, tmp_path):
    """config.json's model records the share; the trials table carries it; the report's nanohead plot puts it on x.
    64 wide, 2 heads: k nano heads of 3 need 64 - 3k divisible by 4 (k a multiple of 4); p=0.2: 4.27 -> 4, 12/64."""
    from reports.analyse import analyse_study
    from reports.collect import load_study
    from reports.figures import nanohead
    from study.catalog import STUDIES
    from study.results import collect, write_trials
    from trainables.train import train

    study_dir = tmp_path / "nanohead_grid"
    for p in (0.0, 0.2):
        config = dict(
            n_layer=1,
            n_embd=64,
            n_head=2,
            seq_len=32,
            batch_size=2,
            max_steps=1,
            eval_every=1,
            eval_batches=1,
            tokenizer="bpe:512",
            nanohead_proportion=p,
            nanohead_dim=3,
            probes=False,
            checkpoint=False,
        )
        trial_dir = study_dir / "trials" / f"nanohead_p{round(p * 100):02d}_d1"
        trial_dir.mkdir(parents=True)
        (trial_dir / "trial_config.json").write_text(json.dumps(config))
        train(config, out_dir=str(trial_dir), log=lambda m: None)
        assert (
            json.loads((trial_dir / "config.json").read_text())["model"]["nanohead_share_achieved"]
            == {0.0: 0, 0.2: 12 / 64}[p]
        )
    df = collect(study_dir, STUDIES["nanohead_grid"], outcomes={})
    assert sorted(zip(df["nanohead_proportion"], df["nanohead_share_achieved"])) == [(0.0, 0.0), (0.2, 0.1875)]
    write_trials(df, study_dir)
    (study_dir / "study.json").write_text(
        json.dumps({"study": "nanohead_grid", "family": "nanohead", "metric": "val_bpb"})
    )
    study = load_study(study_dir)
    res = analyse_study(study)
    assert [r["nanohead_share_achieved"] for r in res["nanohead"]] == [0.0, 0.1875]
    fig = nanohead(study, res)
    assert list(fig.data[1].x) == [0.0, 0.1875] and "as built" in fig.layout.xaxis.title.text


# ----------------------------------------------------------------------------- what a user types


@pytest.mark.parametrize("study", ["nanohead_grid", "nanohead_search"])
def test_paper_dry_runs(token_cache, tmp_path, study):
    proc = run_cli(token_cache, study, "--profile", "paper", "--dry-run", "--output", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "out").exists()
    if study == "nanohead_search":
        assert (
            "n_layer: integer, uniform in [3, 12)" in proc.stdout
            and "lr: number, loguniform in [0.005, 0.08)" in proc.stdout
        )
        return
    rows = parse_table(proc.stdout)
    assert [r["nano"] for r in rows] == ["-"] + [f"{HAND[p][0]}x3" for p in (0.2, 0.4, 0.6, 0.8)]
    for r in rows:
        assert (r["L"], r["width"], r["heads"], r["vocab"]) == (7, 512, 4, V)
        assert r["params"] == hand_total(V, 512, 7) and r["tokens"] == 500 * 524_288
