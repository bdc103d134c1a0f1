"""What a crash leaves: every file is written whole or not at all (write_atomic), and what older runs or a
killed append left torn (a partial last line of metrics.jsonl, a truncated config) is skipped with a warning
instead of failing the table or the resume."""

import json
import math
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from trainables.storage import Mirror, read_jsonl, write_atomic

# ----------------------------------------------------------------------------- write_atomic


def test_write_atomic_replaces_the_whole_file(tmp_path):
    path = tmp_path / "study.json"
    write_atomic(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}'
    write_atomic(path, b"\x89PNG\r\n")
    assert path.read_bytes() == b"\x89PNG\r\n"
    write_atomic(path, writer=lambda tmp: pd.DataFrame({"x": [1, 2]}).to_csv(tmp, index=False))
    assert path.read_text() == "x\n1\n2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.json"]


def test_a_writer_failing_midway_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "trials.csv"
    path.write_text("old,content\n")

    def crash_midway(tmp):
        tmp.write_text("new,cont")  # half of the new file reached the disk
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, writer=crash_midway)
    assert path.read_text() == "old,content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]
    with pytest.raises(OSError, match="disk full"):  # the same when there was no old file
        write_atomic(tmp_path / "new.csv", writer=crash_midway)
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]


def test_mirror_never_uploads_a_file_still_being_written(tmp_path):
    """Mirror.push runs while trials write: the temp file sits beside the target, under a name it skips."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    mirror = Mirror(local, f"file://{remote}")
    (local / "metrics.jsonl").write_text('{"step": 10}\n')
    seen = []

    def push_while_writing(tmp):
        tmp.write_text('{"a": ')
        seen.append(tmp.parent == local)
        mirror.push()

    write_atomic(local / "config.json", writer=push_while_writing)
    assert seen == [True]
    assert sorted(p.name for p in remote.iterdir()) == ["metrics.jsonl"]
    mirror.push()
    assert (remote / "config.json").read_text() == '{"a": '


def test_mirror_push_skips_a_file_removed_while_it_runs(tmp_path):
    """Other writers remove files while the driver pushes (a wandb run's temp files, a rotated log): the push
    sends what is still there instead of raising, since an exception in a Tune callback stops the study."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    for name in ("a.json", "b.json", "c.json"):
        (local / name).write_text(name)

    def remove_the_others(rel):  # runs for each file as it is listed, before its size is read
        for other in ("a.json", "b.json", "c.json"):
            if other != rel and rel == "b.json":
                (local / other).unlink(missing_ok=True)
        return False

    Mirror(local, f"file://{remote}", skip=remove_the_others).push()
    assert sorted(p.name for p in remote.iterdir()) == ["b.json"]


def test_write_atomic_takes_data_or_writer():
    with pytest.raises(TypeError):
        write_atomic("x.json")
    with pytest.raises(TypeError):
        write_atomic("x.json", "{}", writer=lambda tmp: None)


def test_read_jsonl_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10, "val_bpb": 2.5}\n\n{"step": 20, "val_bpb": 2.25}\n{"step": 30, "val_b')
    assert read_jsonl(path) == ([{"step": 10, "val_bpb": 2.5}, {"step": 20, "val_bpb": 2.25}], 1)


def test_reports_still_import_neither_torch_nor_ray():
    """reports/ now imports trainables.storage: it must stay a file reader (shared/DESIGN.md)."""
    code = (
        "import sys, reports.build, reports.serve; "
        "print(sorted(m for m in ('torch', 'ray', 'trainables.data') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- collect() over torn files


def _trial(study_dir, name, trial_config: str, config: str, metrics: str):
    d = study_dir / "trials" / name
    d.mkdir(parents=True)
    (d / "trial_config.json").write_text(trial_config)
    (d / "config.json").write_text(config)
    (d / "metrics.jsonl").write_text(metrics)
    return d


def test_collect_skips_torn_files_with_one_warning_each(tmp_path, capsys):
    from study.catalog import STUDIES
    from study.results import collect

    params = {"total": 1000, "non_embedding": 600, "embedding": 400, "lm_head": 0, "blocks": 600}
    good_config = json.dumps(
        {"model": {"n_layer": 2, "softmax1": True}, "params": params, "flops_per_token": 6000, "planned_steps": 30},
        indent=2,
    )
    evals = (
        '{"step": 10, "tokens": 5120, "train_loss": 1.9, "val_loss": 1.75, "val_bpb": 2.5}\n'
        '{"step": 20, "tokens": 10240, "train_loss": 1.7, "val_loss": 1.5, "val_bpb": 2.25}\n'
    )
    # a: killed while appending its step-30 eval (whose val_bpb would have been the best)
    a = _trial(
        tmp_path,
        "a",
        '{"softmax1": true, "seed": 1}',
        good_config,
        evals + '{"step": 30, "tokens": 15360, "train_loss": 1.5, "val_loss": 1.25, "val_b',
    )
    # b: trial_config.json cut off mid-write
    b = _trial(tmp_path, "b", '{\n  "softmax1": false,\n  "se', good_config, evals)
    # c: config.json cut off mid-write
    c = _trial(tmp_path, "c", '{"softmax1": false, "seed": 2}', '{\n  "model": {\n    "n_la', evals)

    df = collect(tmp_path, STUDIES["softmax1_ab"], outcomes={}).set_index("trial")

    ra, rb, rc = df.loc["a"], df.loc["b"], df.loc["c"]
    # a: the two complete evals; its last one is step 20 of 30 planned
    assert (ra["status"], ra["variant"], ra["seed"]) == ("stopped", "softmax1", 1) and pd.isna(ra["error"])
    assert (ra["val_bpb"], ra["best_val_bpb"], ra["tokens_trained"], ra["train_loss"]) == (2.25, 2.25, 10240, 1.7)
    assert ra["val_ppl"] == pytest.approx(math.exp(1.5))
    assert (ra["params_total"], ra["flops_per_token"], ra["n_layer"]) == (1000, 6000, 2)
    # b: a failed row that says why; what config.json and metrics.jsonl hold is still there
    assert rb["status"] == "failed" and rb["error"].startswith("trial_config.json is torn")
    assert pd.isna(rb["variant"]) and (rb["val_bpb"], rb["params_total"]) == (2.25, 1000)
    # c: no resolved model keys, params or FLOPs; the trial config and metrics as written
    assert (rc["status"], rc["variant"], rc["seed"], rc["val_bpb"]) == ("done", "softmax", 2, 2.25)
    assert (
        pd.isna(rc["error"])
        and pd.isna(rc["params_total"])
        and pd.isna(rc["flops_per_token"])
        and pd.isna(rc["n_layer"])
    )

    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 3
    for torn in (a / "metrics.jsonl", b / "trial_config.json", c / "config.json"):
        assert err.count(str(torn)) == 1, err


# ----------------------------------------------------------------------------- resuming over a torn metrics.jsonl


def test_resume_over_a_torn_metrics_line_keeps_the_complete_evals_up_to_the_checkpoint(token_cache, tmp_path, capsys):
    from trainables.train import train

    tiny = dict(
        n_layer=2,
        n_embd=64,
        n_head=4,
        seq_len=64,
        batch_size=8,
        max_steps=40,
        eval_every=10,
        eval_batches=2,
        tokenizer="bpe:512",
        lr=3e-3,
        warmup_steps=5,
    )
    out, saved = tmp_path / "trial", {}

    def keep(metrics, checkpoint_dir):
        if checkpoint_dir:
            saved[metrics["step"]] = shutil.copytree(checkpoint_dir, tmp_path / f"ckpt{metrics['step']}")

    train(tiny, report=lambda m, c: keep(m, c), out_dir=str(out), log=lambda m: None)
    first = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in first] == [10, 20, 30, 40]
    # killed while appending step 40: steps 10-30 whole, half of step 40's line
    (out / "metrics.jsonl").write_text("\n".join(first[:3]) + "\n" + first[3][: len(first[3]) // 2])

    train(tiny, report=lambda m, c: None, restore=str(saved[20]), out_dir=str(out), log=lambda m: None)

    after = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in after] == [10, 20, 30, 40]  # every line whole, none twice
    assert after[:2] == first[:2]  # the evals up to the checkpoint, as first written
    assert str(out / "metrics.jsonl") in capsys.readouterr().err
