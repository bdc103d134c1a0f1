"""The registered plan in the report: it opens the page with its sha256 checked and every deviation marked, and the
page ends with a methods paragraph written from study.json and the trials table. Study folders written by hand."""

import hashlib
import html
import json
import re

import pandas as pd
from reports_synth import softmax1_rows, write_study

from reports.build import build_report
from reports.plan import deviations, methods_paragraph

HYPOTHESIS = "softmax1 improves perplexity by at least 5% over softmax."
SHA_FIELDS = [
    "hypothesis",
    "metric",
    "mode",
    "baseline",
    "arms",
    "comparisons",
    "decision_rule",
    "alpha",
    "power",
    "seeds",
    "test",
]


def registered(seeds=3, **changes) -> dict:
    """A plan as study.run registers it, hashed here by hand (sorted keys, no spaces, UTF-8)."""
    plan = dict(
        hypothesis=HYPOTHESIS,
        metric="val_bpb",
        mode="min",
        baseline="softmax",
        arms=["softmax", "softmax1"],
        comparisons=1,
        decision_rule=dict(
            threshold=0.05, mde=0.01, text="an arm meets the hypothesis when it beats the baseline by 5%"
        ),
        alpha=0.05,
        power=0.8,
        seeds=seeds,
        test="Welch's two-sided t-test of each arm's val_bpb against the baseline's, Holm-corrected over 1 comparison",
        **changes,
    )
    text = json.dumps({k: plan[k] for k in SHA_FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    plan["sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    plan["recorded"] = "2026-01-01T00:00:00+00:00"
    plan["planner"] = dict(
        seeds_needed=7,
        mde=0.01,
        power=0.8,
        alpha=0.05,
        comparisons=1,
        alpha_per_comparison=0.05,
        test="paired t-test",
        sd=0.0085,
        pilot="results/softmax1_ab",
    )
    return plan


EXTENDED = dict(
    when="2026-01-02T00:00:00+00:00",
    what="seeds extended from 3 to 4 per config by --seeds 4 on --resume (2 more trials)",
    kind="seeds",
)
MODEL = dict(
    arch="nanogpt",
    n_layer=6,
    n_embd=768,
    n_head=6,
    seq_len=256,
    vocab_size=50257,
    tokenizer="gpt2",
    corpus="wiki",
    max_steps=30,
)


def rows(seeds=4):
    return [{**r, **MODEL} for r in softmax1_rows(seeds)]


def meta(**extra):
    return dict(
        study="softmax1_ab",
        profile="smoke",
        git_commit="0123abcdef4567",
        hypothesis=HYPOTHESIS,
        baseline={"variant": "softmax"},
        metric="val_bpb",
        mode="min",
        **extra,
    )


def test_methods_paragraph_says_what_ran_how_it_was_tested_and_what_deviated():
    text = methods_paragraph(meta(plan=registered(), deviations=[EXTENDED]), pd.DataFrame(rows()))
    for words in (
        "We ran the softmax1_ab study with nanostudies at its smoke profile (commit 0123abcdef45)",
        "to test the hypothesis that softmax1 improves perplexity by at least 5% over softmax.",
        "It trained 8 models: 2 arms (softmax, softmax1), 4 seeds each; 8 finished.",
        "nanoGPT transformers of 1,000,000 parameters (6 layers, width 768, 6 heads, context 256, vocabulary 50,257)",
        "Each trial trained on 20,000,000 tokens of the wiki corpus (tokenizer gpt2), 30 steps of AdamW",
        "the comparison is Welch's two-sided t-test of each arm's val_bpb against the baseline's, Holm-corrected "
        "over 1 comparison, at alpha 0.05",
        "Decision rule: an arm meets the hypothesis when it beats the baseline by 5%.",
        f"recorded before the first trial on 2026-01-01; its sha256 is {registered()['sha256']}.",
        "A power analysis asked for 7 seeds per arm to detect a difference of 0.01 val_bpb with 80% power by a "
        "two-sided paired t-test at alpha 0.05",
        "from a seed-to-seed sd of 0.0085 measured in a pilot run.",
        "Deviations from the plan: seeds extended from 3 to 4 per config by --seeds 4 on --resume (2 more trials).",
    ):
        assert words in text, (words, text)
    assert "\n" not in text  # one paragraph, to paste


def test_methods_paragraph_without_a_plan_still_names_the_test():
    text = methods_paragraph(meta(), pd.DataFrame(rows(3)))
    assert "3 seeds each" in text and "Welch's two-sided t-test" in text and "Holm" in text
    assert "sha256" not in text and "deviation" not in text


def test_an_extension_without_a_record_and_an_edited_plan_are_found():
    plan = registered(seeds=2)
    plan["power"] = 0.9  # edited after the hash was taken
    found = [d["what"] for d in deviations(meta(plan=plan), pd.DataFrame(rows(3)))]
    assert any("no longer match its sha256" in w for w in found), found
    assert any("up to 3 seeds per config, the plan 2, and no deviation records" in w for w in found), found
    # the same extension, recorded by study.run: only the record
    assert deviations(meta(plan=registered(seeds=2), deviations=[EXTENDED]), pd.DataFrame(rows(3))) == [EXTENDED]


def section(page: str, sid: str) -> str:
    start = page.index(f"<section id='{sid}'>")
    return page[start : page.index("</section>", start)]


def test_the_report_opens_with_the_plan_and_ends_with_the_methods(tmp_path):
    d = write_study(
        tmp_path,
        "softmax1_ab",
        rows(),
        family="softmax1",
        baseline="softmax",
        meta_extra=dict(hypothesis=HYPOTHESIS, plan=registered(), deviations=[EXTENDED]),
    )
    page = build_report(d, png=False)["html"].read_text()
    ids = re.findall(r"<section id='([^']+)'>", page)
    assert ids[0] == "plan" and ids[-1] == "methods", ids
    plan = section(page, "plan")
    assert registered()["sha256"] in plan and "it matches the fields below" in plan
    assert "softmax, softmax1" in plan and "val_bpb (lower is better)" in plan
    assert "Deviations from the plan (1)" in plan
    assert re.search(r"<li class='deviation'><strong>deviation</strong> 2026-01-02[^<]*: seeds extended", plan)
    methods = html.unescape(section(page, "methods"))
    assert methods_paragraph(json.loads((d / "study.json").read_text()), pd.read_parquet(d / "trials.parquet")) in (
        methods
    )


def test_the_report_marks_an_edited_plan_and_a_study_without_one(tmp_path):
    edited = registered(seeds=4)
    edited["seeds"] = 5
    d = write_study(tmp_path, "edited", rows(), family="softmax1", baseline="softmax", meta_extra=dict(plan=edited))
    plan = section(build_report(d, png=False)["html"].read_text(), "plan")
    assert "<strong class='deviation'>it does not match the fields below" in plan
    old = write_study(tmp_path, "old", rows(), family="softmax1", baseline="softmax")
    page = build_report(old, png=False)["html"].read_text()
    assert "No plan was registered before the first trial" in section(page, "plan")
    assert "<section id='methods'>" in page
