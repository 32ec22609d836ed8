"""The log records a checkpoint covers are on disk (fsynced) before the checkpoint becomes the latest: after a power
loss the resumed run starts after it and would never log the steps of a lost record again."""

from __future__ import annotations

import os

from foxacp.train.loop import train
from tests.train.run_helpers import FAST


def test_the_log_records_before_a_checkpoint_are_on_disk_when_it_becomes_latest(small_config, monkeypatch):
    cfg = small_config(*FAST, "steps=2", "ckpt_every=2")
    real_fsync, synced = os.fsync, []

    def fsync(fd):
        try:
            synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        except OSError:
            synced.append("?")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    train(cfg)
    monkeypatch.undo()
    assert (cfg.run_dir / "checkpoints" / "latest").read_text().strip() == "step_000002"
    latest = next(i for i, name in enumerate(synced) if name.startswith(".latest.tmp-"))
    assert "log.jsonl" in synced[:latest], f"files fsynced before latest: {synced[:latest]}"
