"""A run resumed from another run's checkpoint that diverges at its first step keeps its last good state in its own
run directory (the resumed checkpoint lies elsewhere: this run has none of its own yet)."""

from __future__ import annotations

import dataclasses

import pytest

import foxacp.train.loop as loop
from foxacp.train import DivergedError
from foxacp.train.loop import train
from tests.train.run_helpers import FAST


def test_a_foreign_resume_that_diverges_at_once_checkpoints_into_its_own_run(small_config, tmp_path, monkeypatch):
    a = small_config(*FAST, "steps=2", out=tmp_path / "a")
    train(a)
    b = small_config(*FAST, "steps=4", out=tmp_path / "b")
    real = loop._reduce_step
    monkeypatch.setattr(loop, "_reduce_step", lambda *x, **k: dataclasses.replace(real(*x, **k), loss=float("nan")))
    with pytest.raises(DivergedError, match="at step 3; the last good state is checkpoint step_000002"):
        train(b, resume=a.run_dir)
    assert (b.run_dir / "checkpoints" / "latest").read_text().strip() == "step_000002"
    assert (b.run_dir / "checkpoints" / "step_000002" / "meta.json").exists()
