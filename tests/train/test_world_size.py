"""Resuming on another number of processes: a two-process FSDP2 checkpoint continues in one process with the
losses of the two-process run, and a world size that the global batch does not divide into is refused."""

from __future__ import annotations

import pytest

from foxacp.train.loop import train

from .run_helpers import losses, records, torchrun, train_two_processes


def test_a_two_process_checkpoint_resumes_in_one_process(small_config, corpus_dir, cache_dir, tmp_path):
    two = tmp_path / "two"
    train_two_processes(corpus_dir, cache_dir, two, "steps=4", "ckpt_every=2", "ckpt_keep=0")
    one = small_config("steps=4", "ckpt_every=2", "ckpt_keep=0", out=tmp_path / "one")
    train(one, resume=two / "checkpoints" / "step_000002")
    a, b = losses(two), losses(one.run_dir)
    assert sorted(b) == [3, 4]
    for step in b:
        assert b[step] == pytest.approx(a[step], rel=1e-5)
    # the logged gradient norm (FSDP2: over all shards) and learning rate are the one-process ones too
    ra, rb = records(two, "train"), records(one.run_dir, "train")
    for step in b:
        assert rb[step]["grad_norm"] == pytest.approx(ra[step]["grad_norm"], rel=1e-4)
        assert rb[step]["lr"] == ra[step]["lr"] and rb[step]["tokens"] == ra[step]["tokens"]


def test_a_resume_on_a_world_size_the_batch_does_not_divide_into_is_refused(small_config, tmp_path):
    one = small_config("steps=2", "micro_batch_size=8", out=tmp_path / "one")  # 8 rows: 1 micro-batch of 8
    train(one)
    proc = torchrun(["train", "--resume", "--out", str(one.run_dir), "--set", "steps=4"])
    assert proc.returncode != 0
    assert "foxacp: error: global_batch_tokens=1024 is not a multiple of" in proc.stderr
    assert sorted(losses(one.run_dir)) == [1, 2]  # nothing trained
