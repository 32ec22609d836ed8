"""The run directory: an existing run is never replaced by accident, one run at a time holds it, it is
checked writable before training, and the temporaries of killed processes are cleaned up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from foxacp.io import host_name
from foxacp.train import RunDirError
from foxacp.train.loop import train
from foxacp.train.metrics import read_log
from foxacp.train.rundir import LOCK, RunLock
from tests.test_io import dead_pid


def test_an_existing_run_is_refused_unless_resumed_or_overwritten(small_config, tmp_path):
    cfg = small_config("steps=2")
    train(cfg)
    log = (cfg.run_dir / "log.jsonl").read_text()
    with pytest.raises(RunDirError, match="already holds a run: pass --resume to continue it, --overwrite"):
        train(cfg)
    assert (cfg.run_dir / "log.jsonl").read_text() == log  # nothing lost
    assert (cfg.run_dir / "checkpoints" / "step_000002").is_dir()

    other = small_config("steps=1", out=tmp_path / "other")
    train(other)
    with pytest.raises(RunDirError, match="is not in it"):  # resuming another run into this one would mix them
        train(cfg, resume=other.run_dir)

    summary = train(small_config("steps=1"), overwrite=True)
    assert summary["steps"] == 1 and [r["step"] for r in read_log(cfg.run_dir) if r["kind"] == "train"] == [1]
    assert sorted(p.name for p in (cfg.run_dir / "checkpoints").iterdir()) == ["latest", "step_000001"]


def test_a_second_process_is_refused_with_the_holder_named(small_config, tmp_path):
    cfg = small_config("steps=1")
    cfg.run_dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from foxacp.train.rundir import RunLock; RunLock.acquire(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)",
            str(cfg.run_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=rf"in use by another run \(pid {holder.pid} on {host_name()}"):
            train(cfg)
        assert not (cfg.run_dir / "log.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    train(cfg)  # the kernel dropped the dead holder's lock


def test_the_lock_of_a_dead_process_is_taken_over_with_a_message(small_config, capfd):
    cfg = small_config("steps=1")
    cfg.run_dir.mkdir(parents=True)
    stale = {"pid": dead_pid(), "host": host_name(), "started": "2026-01-01 00:00:00 UTC"}
    (cfg.run_dir / LOCK).write_text(json.dumps(stale))
    train(cfg)
    assert f"taking over the lock of {cfg.run_dir} left by pid {stale['pid']}" in capfd.readouterr().err
    assert (cfg.run_dir / LOCK).read_text() == ""  # released cleanly: the next run takes it silently
    lock = RunLock.acquire(cfg.run_dir)
    lock.release()
    assert "taking over" not in capfd.readouterr().err


def test_an_unwritable_checkpoint_folder_fails_before_training(small_config):
    cfg = small_config("steps=2")
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "checkpoints").write_text("a file where the checkpoint folder goes")
    start = time.perf_counter()
    with pytest.raises(OSError):
        train(cfg)
    assert not (cfg.run_dir / "log.jsonl").exists() and time.perf_counter() - start < 5


def test_temporaries_of_killed_checkpoint_writes_are_removed_at_start(small_config):
    cfg = small_config("steps=1")
    root = cfg.run_dir / "checkpoints"
    root.mkdir(parents=True)
    dead = root / f".step_000004.tmp-{dead_pid()}-{host_name()}-0123abcd"
    alive = root / f".step_000004.tmp-{os.getpid()}-{host_name()}-89abcdef"
    for p in (dead, alive):
        p.mkdir()
        (p / "model.safetensors").write_bytes(b"partial")
    train(cfg)
    assert not dead.exists() and alive.exists()
