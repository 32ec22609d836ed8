"""The validation set is eval_batches x EVAL_WINDOWS held-out windows whatever the micro-batch size and the number
of devices (a resume may change both): the eval loss of a resumed run is that of the run it continues. It used to be
eval_batches batches of world_size x micro_batch_size windows, so a resume evaluated another set under the same
step numbers."""

from __future__ import annotations

import pytest

from foxacp.train.loop import train

from .run_helpers import FAST, records


def test_eval_loss_of_a_resumed_run_does_not_depend_on_the_micro_batch_size(small_config, tmp_path):
    straight = small_config(*FAST, "steps=4", "eval_every=2", "ckpt_every=2", "ckpt_keep=0", out=tmp_path / "straight")
    train(straight)
    # The same run resumed at step 2 with smaller micro-batches (4 accumulation steps instead of 2).
    resumed = small_config(
        *FAST, "steps=4", "eval_every=2", "ckpt_every=2", "micro_batch_size=2", out=tmp_path / "resumed"
    )
    train(resumed, resume=straight.run_dir / "checkpoints" / "step_000002")

    a, b = records(straight.run_dir, "train"), records(resumed.run_dir, "train")
    for step in (3, 4):  # the training is the same (to rounding): the model at step 4 is the same
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-5)
    ea, eb = records(straight.run_dir, "eval")[4], records(resumed.run_dir, "eval")[4]
    assert eb["eval_tokens"] == ea["eval_tokens"]
    assert eb["loss"] == pytest.approx(ea["loss"], rel=1e-5)


def test_eval_loss_of_a_run_resumed_on_two_processes_is_that_of_one_process(small_config, tmp_path):
    from .run_helpers import torchrun

    one = small_config("steps=4", "eval_every=2", "ckpt_every=2", "ckpt_keep=0", out=tmp_path / "one")
    train(one)
    two = tmp_path / "two"
    proc = torchrun(["train", "--resume", str(one.run_dir / "checkpoints" / "step_000002"), "--out", str(two)])
    if proc.returncode and "fully_shard" in proc.stderr and "gloo" in proc.stderr:
        pytest.skip("FSDP2 over gloo is not supported by this torch build")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = records(one.run_dir, "train"), records(two, "train")
    for step in (3, 4):  # FSDP2 on 2 processes trains exactly like one process
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-5)
    ea, eb = records(one.run_dir, "eval")[4], records(two, "eval")[4]
    assert eb["eval_tokens"] == ea["eval_tokens"]
    assert eb["loss"] == pytest.approx(ea["loss"], rel=1e-5)
