"""vocab_depth runs inside note 002's design: its three candidates, the 1:1:1 split, one lr for a tied table, and
learning rates that follow the width by nanochat's rule.

The references are the note's own table (/work/shared/seeds/002: d29 x 192 at vocab 65,536, 38.0M, 33.12% / 33.76% /
33.12%; d4 x 512 at 24,576, 37.7M, exact thirds; d7 x 384 at 32,768, 37.6M, 33.51% / 32.98% / 33.51%; 442K, 3.1M and
1.8M per layer), hand counts of this project's block (q, k, v, proj: 4 C^2; a 4x relu^2 MLP: 8 C^2; no biases, no
norm weights), real modules, and nanochat's lr rule written out: AdamW lrs tuned at width 768, x (width / 768)^-0.5
(gpt.py setup_optimizers), embedding 0.2 and unembedding 0.004 and Muon 0.02 (base_train.py when the note was written).
"""

import json
import math

import pytest
from study_cli import parse_table, run_cli

# The note's candidates: vocab -> (depth, width, heads), its total in millions (one decimal), its shares in % of
# (wte, blocks, lm_head) as it lists them, and its "params per layer".
NOTE = {
    65536: (29, 192, 3, 38.0, (33.12, 33.76, 33.12), "442K"),
    24576: (4, 512, 8, 37.7, (33.33, 33.33, 33.33), "3.1M"),
    32768: (7, 384, 6, 37.6, (33.51, 32.98, 33.51), "1.8M"),
}
# The profiles run the same three at 1/SCALE of the width, head dim and vocab (so 1/SCALE^2 of every count).
SCALE = {"paper": 1, "gpu": 1, "cpu": 4, "smoke": 16}
TOLERANCE = 0.01  # each share within 1 point of a third: "~33%" each, as the note's table rounds
ALLOW = {"max_epochs": 1000.0}  # gpu plans 98M tokens of the wiki corpus (another part of the issue gives it its own)


def hand(vocab: int, width: int, depth: int, tied: bool = False) -> dict:
    embedding = vocab * width
    blocks = depth * (4 * width * width + 8 * width * width)
    return dict(
        embedding=embedding,
        lm_head=0 if tied else embedding,
        blocks=blocks,
        total=embedding * (1 if tied else 2) + blocks,
    )


def module_counts(cfg) -> dict:
    """Counted from the real modules (on the meta device: shapes without memory)."""
    import torch

    from trainables.model import build_model

    with torch.device("meta"):
        model = build_model(cfg)
    tied = model.lm_head.weight is model.transformer.wte.weight
    return dict(
        embedding=model.transformer.wte.weight.numel(),
        lm_head=0 if tied else model.lm_head.weight.numel(),
        blocks=sum(p.numel() for p in model.transformer.h.parameters()),
        total=sum(p.numel() for p in model.parameters()),
    )


def plan(profile: str, overrides: dict | None = None) -> list[dict]:
    from study.catalog import STUDIES, get_profile
    from study.run import plan_trials

    return plan_trials(STUDIES["vocab_depth"], get_profile(profile), {**ALLOW, **(overrides or {})}, 1, 1)


def width_scale(width: int) -> float:
    return (width / 768) ** -0.5


# ----------------------------------------------------------------------------- the note's candidates


def test_the_notes_table_is_this_projects_arithmetic():
    """The note's figures, recomputed by hand for this project's block: they are the same models."""
    for vocab, (depth, width, heads, total_m, shares, per_layer) in NOTE.items():
        p = hand(vocab, width, depth)
        assert width == 64 * heads and round(p["total"] / 1e6, 1) == total_m
        got = tuple(round(100 * p[k] / p["total"], 2) for k in ("embedding", "blocks", "lm_head"))
        assert got == shares
        layer = 12 * width * width
        assert (f"{layer / 1e3:.0f}K" if layer < 1e6 else f"{layer / 1e6:.1f}M") == per_layer
        assert all(abs(s / 100 - 1 / 3) <= TOLERANCE for s in shares)  # the tolerance admits the note's own three


@pytest.mark.parametrize("profile", ["paper", "gpu", "cpu", "smoke"])
def test_default_arms_are_the_notes_candidates(profile):
    k = SCALE[profile]
    trials = plan(profile)
    expected = {(v // k, d, w // k, h, tied) for v, (d, w, h, *_) in NOTE.items() for tied in (False, True)}
    got = {
        (t["gpt"].vocab_size, t["gpt"].n_layer, t["gpt"].n_embd, t["gpt"].n_head, t["gpt"].tie_embeddings)
        for t in trials
    }
    assert got == expected
    from trainables.model import count_params

    for t in trials:
        g = t["gpt"]
        ref = hand(g.vocab_size, g.n_embd, g.n_layer, g.tie_embeddings)
        assert module_counts(g) == ref
        assert {key: count_params(g)[key] for key in ref} == ref
        untied = hand(g.vocab_size, g.n_embd, g.n_layer)
        note = NOTE[g.vocab_size * k]
        assert untied["total"] * k * k == pytest.approx(note[3] * 1e6, abs=0.05e6)  # the note's size, scaled
        assert t["config"]["in_design"] is True
        assert t["name"] == f"vocab_depth_v{g.vocab_size}_d{g.n_layer}" + ("_tied" if g.tie_embeddings else "")


@pytest.mark.parametrize("profile", ["paper", "cpu", "smoke"])
def test_in_design_arms_split_within_the_tolerance(profile):
    for t in plan(profile):
        g = t["gpt"]
        p = hand(g.vocab_size, g.n_embd, g.n_layer)  # the untied split: a tied arm keeps its dims (the note ties later)
        assert all(abs(p[k] / p["total"] - 1 / 3) <= TOLERANCE for k in ("embedding", "lm_head", "blocks"))
        if g.tie_embeddings:  # 1:1:1 becomes 1:1, embeddings : blocks
            tied = hand(g.vocab_size, g.n_embd, g.n_layer, tied=True)
            assert abs(tied["embedding"] / tied["total"] - 1 / 2) <= TOLERANCE


def test_other_vocabs_are_in_the_design_only_with_a_split_and_a_depth():
    """4096: the budget's most even split is d1 x 1472, 16% / 16% / 68%; 12288: d1 x 1024 is exact thirds but one
    layer deep (the note: d2 is 'too shallow'); 26880: d5 x 448 (7 heads) is exact thirds, 36.1M."""
    trials = {
        (t["gpt"].vocab_size, t["gpt"].tie_embeddings): t for t in plan("paper", {"vocab_size": [4096, 12288, 26880]})
    }
    for (vocab, _tied), t in trials.items():
        g = t["gpt"]
        depth, width, in_design = {4096: (1, 1472, False), 12288: (1, 1024, False), 26880: (5, 448, True)}[vocab]
        assert (g.n_layer, g.n_embd) == (depth, width)
        assert t["config"]["in_design"] is in_design
        assert t["name"].endswith("" if in_design else "_offdesign")
    p = hand(4096, 1472, 1)
    assert (p["total"], round(p["blocks"] / p["total"], 4)) == (38_060_032, 0.6832)
    assert hand(12288, 1024, 1)["blocks"] == hand(12288, 1024, 1)["embedding"] == 12_582_912
    assert hand(26880, 448, 5)["blocks"] == hand(26880, 448, 5)["embedding"] == 12_042_240


def test_the_flag_shows_in_the_dry_run_table(token_cache, tmp_path):
    proc = run_cli(
        token_cache,
        "vocab_depth",
        "--profile",
        "paper",
        "--dry-run",
        "--set",
        "vocab_size=4096,24576",
        "--output",
        tmp_path / "out",
    )
    assert proc.returncode == 0, proc.stderr
    rows = {(r["vocab"], r["lm_head"] == 0): r for r in parse_table(proc.stdout)}
    assert (
        rows[(4096, False)]["variant"] == "v4096_d1_offdesign"
        and rows[(4096, True)]["variant"] == "v4096_d1_tied_offdesign"
    )
    assert rows[(24576, False)]["variant"] == "v24576_d4" and rows[(24576, True)]["variant"] == "v24576_d4_tied"


# ----------------------------------------------------------------------------- learning rates


@pytest.mark.parametrize("profile", ["paper", "gpu", "cpu", "smoke"])
def test_lrs_follow_the_width_by_nanochats_rule(profile):
    k = SCALE[profile]
    for t in plan(profile):
        tc, g = t["train"], t["gpt"]
        width = NOTE[g.vocab_size * k][1] // k
        assert (tc.optimizer, tc.muon_adjust_lr, tc.lr) == ("muon", "original", 0.02)  # Muon: no width factor
        assert (tc.beta1, tc.beta2, tc.adam_eps, tc.weight_decay) == (0.8, 0.95, 1e-10, 0.0)
        assert tc.lm_head_lr == pytest.approx(0.004 * width_scale(width))
        assert tc.embedding_lr == (None if g.tie_embeddings else pytest.approx(0.2 * width_scale(width)))
        assert g.init == ("gpt2" if g.tie_embeddings else "nanochat")
    paper = {t["gpt"].n_embd: t["train"] for t in plan("paper") if not t["gpt"].tie_embeddings}
    assert paper[192].embedding_lr == pytest.approx(0.4) and paper[192].lm_head_lr == pytest.approx(0.008)  # x 2


def test_tied_table_has_one_lr_the_lm_heads():
    """The real d4 x 512 models at vocab 24,576 and their optimizers: tied, one AdamW group holds the shared matrix at the
    lm_head's lr; untied, the embedding at 0.2 and the lm_head at 0.004, both x (512 / 768)^-0.5. Muon: the 24 matrices."""
    import torch

    from trainables.model import GPT
    from trainables.train import build_optimizers, lrs_by_role

    s = width_scale(512)
    for t in [t for t in plan("paper") if t["gpt"].vocab_size == 24576]:
        torch.manual_seed(0)
        model = GPT(t["gpt"])
        adamw, muon = build_optimizers(model, t["train"])
        wte, head = model.transformer.wte.weight, model.lm_head.weight
        if t["gpt"].tie_embeddings:
            assert wte is head
            (group,) = adamw.param_groups
            assert group["params"] == [head] and group["lr"] == pytest.approx(0.004 * s)
        else:
            lr = {id(g["params"][0]): g["lr"] for g in adamw.param_groups}
            assert len(adamw.param_groups) == 2 and all(len(g["params"]) == 1 for g in adamw.param_groups)
            assert lr[id(wte)] == pytest.approx(0.2 * s) and lr[id(head)] == pytest.approx(0.004 * s)
        assert all(
            g["betas"] == (0.8, 0.95) and g["eps"] == 1e-10 and g["weight_decay"] == 0 for g in adamw.param_groups
        )
        (group,) = muon.param_groups
        matrices = [m.weight for m in model.transformer.h.modules() if isinstance(m, torch.nn.Linear)]
        assert len(matrices) == 4 * 6 and {id(p) for p in group["params"]} == {id(p) for p in matrices}
        assert group["lr"] == 0.02 and group["adjust_lr_fn"] == "original"
        roles = lrs_by_role(model, [adamw, muon])
        embedding = 0.004 * s if t["gpt"].tie_embeddings else 0.2 * s
        assert roles == pytest.approx(dict(embedding=embedding, lm_head=0.004 * s, matrices=0.02))


def test_a_tied_nanogpt_table_is_the_lm_head_and_its_positions_the_embeddings():
    """nanoGPT ties wte to lm_head; its position table is an input table only, at the embedding's lr."""
    from trainables.model import GPTConfig, build_model
    from trainables.train import TrainConfig, build_optimizers, lrs_by_role

    model = build_model(
        GPTConfig(
            arch="nanogpt",
            vocab_size=256,
            n_layer=1,
            n_embd=32,
            n_head=2,
            seq_len=16,
            tie_embeddings=True,
            qk_norm=False,
            logit_softcap=None,
        )
    )
    (adamw,) = build_optimizers(model, TrainConfig(lr=1e-3, embedding_lr=5e-2, lm_head_lr=2e-3))
    lr = {id(p): g["lr"] for g in adamw.param_groups for p in g["params"]}
    assert lr[id(model.transformer.wte.weight)] == 2e-3 and lr[id(model.transformer.wpe.weight)] == 5e-2
    assert sum(len(g["params"]) for g in adamw.param_groups) == len(list(model.parameters()))  # each once
    assert lrs_by_role(model, [adamw]) == dict(embedding=2e-3, lm_head=2e-3, positions=5e-2, matrices=1e-3, other=1e-3)


def test_a_set_embedding_lr_on_a_tied_arm_is_refused_and_used_untied(capsys):
    import study.run

    code = study.run.main(["vocab_depth", "--profile", "smoke", "--set", "embedding_lr=0.1", "--dry-run"])
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: embedding_lr=0.1"), lines
    assert "lm_head_lr" in lines[0] and "tie_embeddings=false" in lines[0]
    trials = plan("smoke", {"embedding_lr": 0.1, "tie_embeddings": False})
    assert {t["train"].embedding_lr for t in trials} == {0.1}


def test_paper_is_base_trains_run():
    """base_train when the note was written: 32 x 2048 a micro-step, 524,288 tokens a step, no warmup, the last 20%
    linearly to 0, Muon momentum 0.85 to 0.95 over 300 steps, clip 1, eval every 250 steps over 20 x 524,288 tokens;
    20 tokens per parameter of the 38M budget: 760,000,000 / 524,288 -> 1,450 steps."""
    for t in plan("paper"):
        tc, g = t["train"], t["gpt"]
        assert (tc.batch_size, g.seq_len, tc.total_batch_tokens) == (32, 2048, 524_288)
        assert (tc.warmup_steps, tc.schedule, tc.warmdown_frac, tc.min_lr_frac) == (0, "linear", 0.2, 0.0)
        assert (tc.muon_momentum_warmup, tc.grad_clip, tc.dtype, tc.compile) == (300, 1.0, "bfloat16", True)
        assert (tc.eval_every, tc.eval_batches * tc.batch_size * g.seq_len) == (250, 20 * 524_288)
        assert t["tokens"] == math.ceil(20 * 38e6 / 524_288) * 524_288 == 1450 * 524_288
        assert g.n_embd // g.n_head == 64 and g.qk_norm and g.logit_softcap == 15


# ----------------------------------------------------------------------------- recorded per trial


def test_design_flag_and_lrs_are_recorded_per_trial(token_cache, tmp_path):
    """Smoke's d4 x 32 at vocab 1536 (untied and tied) and vocab 512 (outside the design: d1 x 76), one step each:
    config.json records the lr each part trained at, the trials table carries it and the flag, the report the variant."""
    from reports.analyse import analyse_study
    from reports.collect import load_study
    from study.catalog import STUDIES
    from study.results import collect, write_trials
    from trainables.train import train

    study_dir = tmp_path / "vocab_depth"
    for t in plan("smoke", {"vocab_size": [1536, 512]}):
        config = {
            **t["config"],
            "max_steps": 1,
            "eval_every": 1,
            "eval_batches": 1,
            "probes": False,
            "checkpoint": False,
        }
        trial_dir = study_dir / "trials" / t["name"]
        trial_dir.mkdir(parents=True)
        (trial_dir / "trial_config.json").write_text(json.dumps(config))
        train(config, out_dir=str(trial_dir), log=lambda m: None)
    df = collect(study_dir, STUDIES["vocab_depth"], outcomes={}).set_index("variant")
    s = width_scale(32)
    assert set(df.index) == {"v1536_d4", "v1536_d4_tied", "v512_d1_offdesign", "v512_d1_tied_offdesign"}
    assert df.loc["v1536_d4", "lr_embedding"] == pytest.approx(0.2 * s) and df.loc[
        "v1536_d4", "lr_lm_head"
    ] == pytest.approx(0.004 * s)
    assert df.loc["v1536_d4_tied", "lr_embedding"] == df.loc["v1536_d4_tied", "lr_lm_head"] == pytest.approx(0.004 * s)
    assert set(df["lr_matrices"]) == {0.02}
    s76 = width_scale(76)
    assert df.loc["v512_d1_offdesign", "lr_embedding"] == pytest.approx(0.2 * s76)
    assert df["in_design"].to_dict() == {
        "v1536_d4": True,
        "v1536_d4_tied": True,
        "v512_d1_offdesign": False,
        "v512_d1_tied_offdesign": False,
    }
    write_trials(df.reset_index(), study_dir)
    (study_dir / "study.json").write_text(
        json.dumps({"study": "vocab_depth", "family": "vocab_depth", "metric": "val_bpb"})
    )
    rows = analyse_study(load_study(study_dir))["vocab_depth"]
    assert {r["variant"] for r in rows} == set(df.index)
