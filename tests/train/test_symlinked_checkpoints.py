"""A run whose checkpoints/ is a symbolic link (a bigger disk): its own older checkpoint belongs to it (resolved through
the link), so resuming it branches off in place instead of being refused as another run's."""

from __future__ import annotations

import dataclasses
import shutil

from foxacp.train.checkpoint import resolve_checkpoint
from foxacp.train.loop import train
from tests.train.run_helpers import FAST


def test_resuming_an_older_checkpoint_through_a_symlinked_checkpoints_folder_branches_off(small_config, tmp_path):
    cfg = small_config(*FAST, "steps=4", "ckpt_every=2", "ckpt_keep=0")  # step_000002, step_000004
    train(cfg)
    elsewhere = tmp_path / "big-disk" / "checkpoints"
    elsewhere.parent.mkdir()
    shutil.move(cfg.run_dir / "checkpoints", elsewhere)
    (cfg.run_dir / "checkpoints").symlink_to(elsewhere, target_is_directory=True)

    older = cfg.run_dir / "checkpoints" / "step_000002"
    summary = train(dataclasses.replace(cfg, lr=1e-3), resume=older)
    assert summary["steps"] == 4
    root = cfg.run_dir / "checkpoints"
    assert resolve_checkpoint(cfg.run_dir).name == "step_000004"
    assert len(list(root.glob("abandoned-*"))) == 1  # the first branch's step_000004 moved aside
