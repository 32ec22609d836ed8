"""Interruptions the existing tests do not cover: a full disk while a checkpoint is written, a signal while a
checkpoint is written. Both keep the run consistent and resumable, step for step."""

from __future__ import annotations

import errno
import os
import signal

import pytest
import torch

from foxacp.train import checkpoint as ck
from foxacp.train.checkpoint import resolve_checkpoint
from foxacp.train.loop import train

from .run_helpers import FAST, losses


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_and_the_run_resumes(
    small_config, tmp_path, monkeypatch
):
    ref = small_config(*FAST, "steps=6", "ckpt_every=2", "ckpt_keep=0", out=tmp_path / "ref")
    train(ref)
    cfg = small_config(*FAST, "steps=6", "ckpt_every=2", "ckpt_keep=0", out=tmp_path / "run")
    real, calls = torch.save, []

    def failing(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the state.pt of step 4: half written, then the disk is full
            f.write(b"x" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(ck.torch, "save", failing)
    with pytest.raises(OSError, match="No space"):
        train(cfg)
    monkeypatch.setattr(ck.torch, "save", real)
    root = cfg.run_dir / "checkpoints"
    assert (root / "latest").read_text().strip() == "step_000002"
    assert not (root / "step_000004").exists()
    assert resolve_checkpoint(cfg.run_dir) == root / "step_000002"
    train(cfg, resume=cfg.run_dir)
    assert losses(cfg.run_dir) == losses(ref.run_dir)


def test_a_signal_while_a_checkpoint_is_written_stops_after_the_next_step(small_config, tmp_path, monkeypatch):
    ref = small_config(*FAST, "steps=6", "ckpt_every=2", "ckpt_keep=0", out=tmp_path / "ref")
    train(ref)
    cfg = small_config(*FAST, "steps=6", "ckpt_every=2", "ckpt_keep=0", out=tmp_path / "run")
    real = ck.save_file

    def signalled(tensors, path, *args, **kwargs):
        if "step_000002" in str(path):
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the run's StopRequest: sets the flag only
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(ck, "save_file", signalled)
    summary = train(cfg)
    assert summary["stopped_by"] == "SIGTERM" and summary["steps"] == 3
    root = cfg.run_dir / "checkpoints"
    assert (root / "latest").read_text().strip() == "step_000003"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_000002", "step_000003"]
    monkeypatch.setattr(ck, "save_file", real)
    train(cfg, resume=cfg.run_dir)
    assert losses(cfg.run_dir) == losses(ref.run_dir)
