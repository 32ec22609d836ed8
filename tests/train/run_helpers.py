"""Helpers shared by the review tests: a corpus of short documents and log readers."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from foxacp.train.metrics import read_log


def records(run_dir, kind: str) -> dict[int, dict]:
    """The records of ``kind`` by step (the last one where a step repeats)."""
    return {r["step"]: r for r in read_log(run_dir) if r["kind"] == kind}


def losses(run_dir) -> dict[int, float]:
    return {s: r["loss"] for s, r in records(run_dir, "train").items()}


def write_short_docs(out: Path, n: int, seed: int = 0) -> Path:
    """``n`` documents of 8-16 short words each (about 60-110 bytes), one .txt file each."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        k = rng.randint(8, 16)
        (out / f"d{i:05d}.txt").write_text(" ".join(rng.choice(words) for _ in range(k)))
    return out


def torchrun(args: list[str], *, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m foxacp.cli ARGS`` under torchrun with 2 processes on CPU (gloo)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "foxacp.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=timeout)


def train_two_processes(corpus_dir: Path, cache_dir: Path, out: Path, *settings: str) -> None:
    """``foxacp train`` of the SMALL config (plus ``settings``) into ``out`` on 2 processes; skips the test where
    this torch build has no FSDP2 over gloo."""
    from .conftest import SMALL

    data = ["--data", str(corpus_dir), "--out", str(out)]
    proc = torchrun(["train", *data, "--set", *SMALL, f"cache_dir={cache_dir}", *settings])
    if proc.returncode and "fully_shard" in proc.stderr and "gloo" in proc.stderr:
        pytest.skip("FSDP2 over gloo is not supported by this torch build")
    assert proc.returncode == 0, proc.stderr[-3000:]


# Smaller steps where the batch shape does not matter: 4 rows of 64 tokens (as tests/train/test_resume_safety.py).
FAST = ("seq_len=64", "global_batch_tokens=256", "micro_batch_size=4")
