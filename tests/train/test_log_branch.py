"""Resuming from an older checkpoint branches off: its newer checkpoints move to checkpoints/abandoned-*/, and the
log records of the steps after the resumed one move with them (log-superseded.jsonl), so the run's history holds one
branch. They used to stay in log.jsonl, where the plot mixed the abandoned branch's steps into the new one's."""

from __future__ import annotations

import json

import pytest

from foxacp.train.loop import train
from foxacp.train.metrics import SUPERSEDED_LOG, MetricsLogger, read_log
from foxacp.train.plot import _by_step
from foxacp.train.rundir import prepare_run_dir, remove_run_files

from .run_helpers import FAST


def test_an_abandoned_branch_leaves_no_train_records_in_the_run(small_config):
    # The first branch: 6 steps at peak lr 2e-3, logged every step, checkpoints at 2, 4 and 6.
    first = small_config(*FAST, "steps=6", "ckpt_every=2", "ckpt_keep=0", "warmup_tokens=512")
    train(first)
    old = {r["step"]: r["lr"] for r in read_log(first.run_dir) if r["kind"] == "train"}
    assert sorted(old) == [1, 2, 3, 4, 5, 6]

    # The user goes back to step 2 with a lower learning rate (and logs every 2 steps): a new branch.
    branch = ("steps=6", "ckpt_every=2", "ckpt_keep=0", "warmup_tokens=512", "lr=1e-3", "log_every=2")
    second = small_config(*FAST, *branch)
    train(second, resume=first.run_dir / "checkpoints" / "step_000002")
    assert len(list((first.run_dir / "checkpoints").glob("abandoned-*"))) == 1  # the checkpoints branched off

    # What the run's log presents as its history (the plot's view): steps 1-2 of the common trunk, then only the
    # new branch's steps 4 and 6; the abandoned branch's records moved next to its checkpoints.
    plotted = _by_step(read_log(first.run_dir), "train")
    stale = [(r["step"], r["lr"], old[r["step"]]) for r in plotted if r["step"] in (3, 5)]
    assert [r["step"] for r in plotted] == [1, 2, 4, 6], f"(step, lr, old branch's lr) of stale records: {stale}"
    (abandoned,) = (first.run_dir / "checkpoints").glob("abandoned-*")
    moved = [json.loads(line) for line in (abandoned / SUPERSEDED_LOG).read_text().splitlines()]
    assert sorted(r["step"] for r in moved if r["kind"] == "train") == [3, 4, 5, 6]


def test_overwrite_removes_the_previous_runs_superseded_log(tmp_path):
    """--overwrite deletes the run's files (RUN_FILES); the replaced run's log-superseded.jsonl must go with its
    log.jsonl, else the new run's later rewinds append to (and its history mixes with) the old run's records."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text(json.dumps({"kind": "train", "step": 1}) + "\n")
    (run / SUPERSEDED_LOG).write_text(json.dumps({"kind": "train", "step": 7, "run": "old"}) + "\n")
    assert prepare_run_dir(run, resume=None, overwrite=True)
    remove_run_files(run)
    assert not (run / "log.jsonl").exists()
    assert not (run / SUPERSEDED_LOG).exists(), "the replaced run's superseded records survived --overwrite"


def test_overwritten_run_superseded_log_holds_only_the_new_runs_records(small_config, tmp_path):
    """End to end: run A leaves log-superseded.jsonl (a resume after a crash that had logged step 3 past its
    checkpoint at 2); run B overwrites A and goes through the same; B's superseded log must hold B's records only."""
    out = tmp_path / "run"

    def crash_after_logging_step_3(tag: str) -> None:
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps({"kind": "train", "step": 3, "loss": 1.0, "run": tag}) + "\n")

    a = small_config(*FAST, "steps=2", "ckpt_every=2", out=out)
    train(a)
    crash_after_logging_step_3("A")
    train(a, resume=out)  # rewinds to step 2: A's step-3 record moves to run/log-superseded.jsonl
    assert [json.loads(x)["run"] for x in (out / SUPERSEDED_LOG).read_text().splitlines()] == ["A"]

    b = small_config(*FAST, "steps=2", "ckpt_every=2", "lr=1e-3", out=out)
    train(b, overwrite=True)
    crash_after_logging_step_3("B")
    train(b, resume=out)
    tags = [json.loads(x).get("run") for x in (out / SUPERSEDED_LOG).read_text().splitlines()]
    assert tags == ["B"]


def test_a_crash_inside_rewind_moves_no_record_twice(tmp_path, monkeypatch):
    """rewind appends the later records to the superseded log first, then rewrites log.jsonl. A crash between the two
    (simulated: the rewrite fails) leaves them in both; the resume that follows must not move them a second time:
    each superseded record must appear in the superseded log exactly once."""
    import foxacp.train.metrics as metrics

    run = tmp_path / "run"
    run.mkdir()
    recs = [{"kind": "train", "step": s} for s in range(1, 7)]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    to = run / SUPERSEDED_LOG

    def crash(path, data):
        raise OSError("simulated crash before log.jsonl was rewritten")

    with monkeypatch.context() as m:
        m.setattr(metrics, "atomic_write", crash)
        with pytest.raises(OSError):
            MetricsLogger(run, enabled=True, tensorboard=False, fresh=False).rewind(3, to)
    # The process restarts and resumes from the same checkpoint (step 3).
    MetricsLogger(run, enabled=True, tensorboard=False, fresh=False).rewind(3, to)
    kept = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    moved = [json.loads(x)["step"] for x in to.read_text().splitlines()]
    assert kept == [1, 2, 3]
    assert moved == [4, 5, 6]
