"""Clean stops: SIGINT/SIGTERM checkpoint and exit, a second signal exits at once, a diverged run stops
with a one-line error and leaves its last good state as a checkpoint."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import foxacp
from foxacp.cli import main
from foxacp.train import DivergedError
from foxacp.train.loop import train
from foxacp.train.metrics import read_log

from .conftest import SMALL


def wait_for_train_record(run_dir, proc, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        log = run_dir / "log.jsonl"
        if log.exists() and any(r["kind"] == "train" for r in read_log(run_dir)):
            return
        time.sleep(0.05)
    raise AssertionError("no step was logged")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_the_run_resumes(sig, corpus_dir, cache_dir, tmp_path):
    out = tmp_path / "run"
    args = ["--data", str(corpus_dir), "--out", str(out), "--set", *SMALL, f"cache_dir={cache_dir}", "steps=100000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "foxacp.cli", "train", *args], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        wait_for_train_record(out, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "stopping after this step" in err and "Traceback" not in err
    records = read_log(out)
    stop = [r for r in records if r["kind"] == "stop"]
    assert len(stop) == 1 and stop[0]["signal"] == sig.name
    step = stop[0]["step"]
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step_{step:06d}"
    assert max(r["step"] for r in records if r["kind"] == "train") == step  # the partial window is logged

    assert main(["train", "--resume", "--out", str(out), "--steps", str(step + 2)]) == 0
    steps = [r["step"] for r in read_log(out) if r["kind"] == "train"]
    assert steps[-2:] == [step + 1, step + 2]


def test_a_second_signal_exits_at_once():
    script = (
        "import os, signal, time\n"
        "from foxacp.train.stop import StopRequest\n"
        "with StopRequest() as stop:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.5)\n"
        "    print('first:', stop.signal_name, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "    print('still running', flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "first: SIGINT" in proc.stdout and "still running" not in proc.stdout
    assert proc.returncode == -signal.SIGINT


def test_a_diverging_run_stops_with_the_step_and_keeps_the_last_good_state(small_config):
    cfg = small_config("lr=1e30", "warmup_tokens=0", "steps=20")
    with pytest.raises(DivergedError, match=r"(loss|gradient norm) is (NaN|inf|-inf) at step (\d+)") as info:
        train(cfg)
    bad = int(info.value.args[0].split(" at step ")[1].split(";")[0])
    assert bad >= 2 and f"checkpoint step_{bad - 1:06d}" in str(info.value)
    assert (cfg.run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{bad - 1:06d}"
    model = foxacp.load(cfg.run_dir)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    logged = [r["loss"] for r in read_log(cfg.run_dir) if r["kind"] == "train"]
    assert len(logged) == bad - 1 and all(math.isfinite(x) for x in logged)


def test_the_cli_reports_divergence_in_one_line(corpus_dir, cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--data", str(corpus_dir), "--out", str(out), "--set", *SMALL, f"cache_dir={cache_dir}"]
    assert main(["train", *args, "lr=1e30", "warmup_tokens=0", "steps=20"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("foxacp: error: ") and " at step " in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("when", ["last step", "last checkpoint"])
def test_a_signal_as_the_run_completes_leaves_a_completed_run(small_config, monkeypatch, when):
    """A signal that lands during the last step or its checkpoint: every step is done, so the run reports no
    stop (the CLI then exits 0 and plots), and the log holds no stop record."""
    import foxacp.train.loop as loop

    cfg = small_config("steps=3")
    real_step, real_checkpoint = loop._step, loop._checkpoint

    def step(s, meter, first_step):
        if when == "last step" and s.step == 2:
            s.stop.signum = signal.SIGTERM
        return real_step(s, meter, first_step)

    def checkpoint(s, *args):
        if when == "last checkpoint":
            s.stop.signum = signal.SIGTERM
        return real_checkpoint(s, *args)

    monkeypatch.setattr(loop, "_step", step)
    monkeypatch.setattr(loop, "_checkpoint", checkpoint)
    summary = train(cfg)
    assert summary["stopped_by"] is None and summary["steps"] == 3
    assert not [r for r in read_log(cfg.run_dir) if r["kind"] == "stop"]
