"""A resume to a run length shorter than the checkpoint's step is refused before anything is written (it used to be
accepted, train nothing and rewrite config.json with a length the run had passed)."""

from __future__ import annotations

import json

import pytest

from foxacp.train.config import ConfigError
from foxacp.train.loop import train

from .run_helpers import FAST


def test_a_resume_to_fewer_steps_than_trained_is_refused(small_config):
    cfg = small_config(*FAST, "steps=4", "ckpt_every=2")
    train(cfg)
    shorter = small_config(*FAST, "steps=2")
    with pytest.raises(ConfigError, match="at step 4, past this run's 2 steps"):
        train(shorter, resume=cfg.run_dir)
    assert json.loads((cfg.run_dir / "config.json").read_text())["steps"] == 4
