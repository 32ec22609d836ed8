"""`foxacp train ... | head`: once stdout's reader is gone, progress lines go to /dev/null and the run trains to its
end with its checkpoint (a BrokenPipeError inside the loop used to end the run at once, every step since the last
checkpoint lost, reported as a user error). stdout is unbuffered here so the pipe breaks at a known line."""

from __future__ import annotations

import os
import subprocess
import sys

from foxacp.train.checkpoint import CheckpointError, resolve_checkpoint

from .conftest import SMALL
from .run_helpers import FAST, losses


def test_a_closed_stdout_does_not_lose_the_run(corpus_dir, cache_dir, tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(corpus_dir),
        "--out",
        str(out),
        "--set",
        *SMALL,
        *FAST,
        f"cache_dir={cache_dir}",
        "steps=40",
        "log_every=1",
        "ckpt_every=0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "foxacp.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    for line in proc.stdout:  # `head`: read until step 5, then go away
        if line.startswith(b"step 5/"):
            break
    proc.stdout.close()
    _, err = proc.communicate(timeout=500)
    err = err.decode(errors="replace")
    trained = sorted(losses(out))
    try:
        ckpt = resolve_checkpoint(out).name
    except CheckpointError:
        ckpt = None
    assert proc.returncode == 0 and "Broken pipe" not in err, (proc.returncode, err[-300:], trained[-1:], ckpt)
    assert ckpt == "step_000040"
