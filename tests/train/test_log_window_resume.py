"""A checkpoint ends a logging window: a run resumed from a checkpoint between two log steps logs the losses of the
uninterrupted run (the window's sums are not in the checkpoint)."""

from __future__ import annotations

import pytest

import foxacp.train.loop as loop
from foxacp.train.loop import train
from foxacp.train.metrics import read_log
from tests.train.run_helpers import FAST, losses


def test_a_run_resumed_inside_a_logging_window_logs_the_uninterrupted_runs_losses(small_config, tmp_path, monkeypatch):
    settings = (*FAST, "steps=6", "log_every=2", "ckpt_every=3", "ckpt_keep=0")
    ref = small_config(*settings, out=tmp_path / "ref")
    train(ref)
    assert sorted(losses(ref.run_dir)) == [2, 3, 4, 6]  # a checkpoint (3) ends a logging window

    cfg = small_config(*settings, out=tmp_path / "run")
    real_step = loop._step

    def dying_step(s, meter, first_step):
        if s.step == 4:  # the process dies in step 5 (after step 4's record, before the next checkpoint)
            raise RuntimeError("killed in step 5")
        return real_step(s, meter, first_step)

    with monkeypatch.context() as m:
        m.setattr(loop, "_step", dying_step)
        with pytest.raises(RuntimeError, match="killed"):
            train(cfg)
    assert (cfg.run_dir / "checkpoints" / "latest").read_text().strip() == "step_000003"
    train(cfg, resume=cfg.run_dir)

    got, want = losses(cfg.run_dir), losses(ref.run_dir)
    assert sorted(got) == sorted(want), [r["step"] for r in read_log(cfg.run_dir) if r["kind"] == "train"]
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-9, abs=0), (step, got[step], want[step])
