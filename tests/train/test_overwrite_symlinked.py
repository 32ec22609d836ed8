"""A run whose checkpoints/ is a symbolic link (another disk) can be overwritten: the linked folder is emptied and
kept, not left half-deleted by an rmtree that refuses links."""

from __future__ import annotations

import shutil

from foxacp.train.loop import train
from foxacp.train.metrics import read_log
from tests.train.run_helpers import FAST


def test_a_run_with_symlinked_checkpoints_can_be_overwritten(small_config, tmp_path):
    cfg = small_config(*FAST, "steps=2")
    train(cfg)
    elsewhere = tmp_path / "big-disk" / "checkpoints"
    elsewhere.parent.mkdir()
    shutil.move(cfg.run_dir / "checkpoints", elsewhere)
    (cfg.run_dir / "checkpoints").symlink_to(elsewhere, target_is_directory=True)

    log = (cfg.run_dir / "log.jsonl").read_text()
    try:
        train(small_config(*FAST, "steps=1"), overwrite=True)
    except OSError as e:
        kept = (cfg.run_dir / "log.jsonl").exists() and (cfg.run_dir / "log.jsonl").read_text() == log
        raise AssertionError(f"overwrite failed ({e}); the old run's log {'kept' if kept else 'deleted'}") from None
    assert [r["step"] for r in read_log(cfg.run_dir) if r["kind"] == "train"] == [1]
