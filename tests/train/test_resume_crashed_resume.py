"""A plain ``foxacp train --resume --out RUN`` after a resume that changed settings (a longer run, a lower learning
rate) and died before its first checkpoint keeps that session's settings, not the checkpoint's."""

from __future__ import annotations

import dataclasses
import json

import pytest

import foxacp.train.loop as loop
from foxacp.cli import main
from foxacp.train.loop import train
from foxacp.train.metrics import read_log
from tests.train.run_helpers import FAST


def test_a_plain_resume_keeps_the_settings_of_the_session_that_died_before_its_checkpoint(small_config, monkeypatch):
    cfg = small_config(*FAST, "steps=4", "ckpt_every=4")
    train(cfg)  # step_000004
    extended = dataclasses.replace(cfg, steps=8, lr=1e-3)
    real_step = loop._step

    def dying_step(s, meter, first_step):
        if s.step == 5:  # dies in step 6, before the checkpoint of step 8
            raise RuntimeError("killed in step 6")
        return real_step(s, meter, first_step)

    with monkeypatch.context() as m:
        m.setattr(loop, "_step", dying_step)
        with pytest.raises(RuntimeError, match="killed"):
            train(extended, resume=cfg.run_dir)
    saved = json.loads((cfg.run_dir / "config.json").read_text())
    assert (saved["steps"], saved["lr"]) == (8, 1e-3)  # the run's settings, as the dead session left them

    assert main(["train", "--resume", "--out", str(cfg.run_dir)]) == 0
    start = [r for r in read_log(cfg.run_dir) if r["kind"] == "start"][-1]
    after = json.loads((cfg.run_dir / "config.json").read_text())
    trained = max(r["step"] for r in read_log(cfg.run_dir) if r["kind"] == "train")
    assert (start["train_config"]["steps"], start["train_config"]["lr"], trained) == (8, 1e-3, 8), start[
        "resume_changes"
    ]
    assert (after["steps"], after["lr"]) == (8, 1e-3)
