"""--overwrite replaces the old run only once the new one has started: a new run that fails to start (a mistyped
corpus path) leaves the old run whole."""

from __future__ import annotations

import dataclasses

import pytest

from foxacp.train.checkpoint import resolve_checkpoint
from foxacp.train.loop import train
from tests.train.run_helpers import FAST


def test_an_overwrite_that_fails_to_start_keeps_the_old_run(small_config, tmp_path):
    cfg = small_config(*FAST, "steps=2")
    train(cfg)
    log = (cfg.run_dir / "log.jsonl").read_text()
    broken = dataclasses.replace(cfg, corpus=str(tmp_path / "no-such-corpus"))
    with pytest.raises(Exception) as err:
        train(broken, overwrite=True)
    assert "no-such-corpus" in str(err.value)
    assert (cfg.run_dir / "checkpoints" / "step_000002").is_dir(), "the old run's checkpoints are gone"
    assert (cfg.run_dir / "log.jsonl").exists() and (cfg.run_dir / "log.jsonl").read_text() == log
    assert resolve_checkpoint(cfg.run_dir).name == "step_000002"
