"""A SIGTERM that reaches one rank only (a scheduler killing one process of a torchrun job) stops every rank after the
step, and every rank reports it by name: rank 0, which did not get it, used to report stopped_by None (exit 0, the
plot drawn as for a completed run) and log "signal": null."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from foxacp.train.metrics import read_log

from .conftest import SMALL
from .run_helpers import FAST

SCRIPT = Path(__file__).with_name("one_rank_signal.py")


def test_a_signal_on_one_rank_is_reported_as_a_stop_by_rank_0(corpus_dir, cache_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        str(SCRIPT),
        str(out),
        *SMALL,
        *FAST,
        "micro_batch_size=2",
        f"corpus={corpus_dir}",
        f"cache_dir={cache_dir}",
        "steps=6",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode and "fully_shard" in proc.stderr and "gloo" in proc.stderr:
        pytest.skip("FSDP2 over gloo is not supported by this torch build")
    assert proc.returncode == 0, proc.stderr[-3000:]
    s0 = json.loads((out / "summary-0.json").read_text())
    s1 = json.loads((out / "summary-1.json").read_text())
    assert s0["steps"] == s1["steps"] == 2  # every rank stopped after step 2, with a checkpoint
    assert (out / "checkpoints" / "step_000002").is_dir()
    assert s1["stopped_by"] == "SIGTERM"
    stop = [r for r in read_log(out) if r["kind"] == "stop"]
    assert s0["stopped_by"] is not None, s0
    assert stop and stop[0]["signal"] == "SIGTERM", stop
