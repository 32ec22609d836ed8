"""Shared fixtures: a small local corpus (stdlib modules copied into a folder) and a tiny run config."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest
import torch

from foxacp.train.config import TrainConfig, parse_overrides, preset_config

# A 2-layer, 64-wide FoX Pro on the PyTorch attention path: a step takes tens of milliseconds on CPU.
SMALL = [
    "model.n_layers=2",
    "model.d_model=64",
    "model.n_heads=2",
    "model.attn_backend=torch",
    "seq_len=128",
    "micro_batch_size=4",
    "global_batch_tokens=1024",  # 8 rows: 2 micro-batches of 4 on one process
    "steps=8",
    "warmup_tokens=2048",
    "log_every=1",
    "eval_every=0",
    "eval_batches=2",
    "ckpt_every=0",
    "progress=false",
    "tensorboard=false",
    "device=cpu",
]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared CPU: one intra-op thread is several times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """About 30 mid-sized stdlib modules as a local text corpus (3 of them held out)."""
    src = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in sorted(src.glob("*.py")) if 8_000 < p.stat().st_size < 40_000][:30]
    assert len(files) >= 10
    out = tmp_path_factory.mktemp("corpus")
    for p in files:
        shutil.copy(p, out / p.name)
    return out


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def small_config(corpus_dir, cache_dir, tmp_path):
    """small_config(*items, out=...) -> the tiny preset shrunk by SMALL, then ``items`` applied."""

    def make(*items: str, out: Path | None = None) -> TrainConfig:
        base = [f"corpus={corpus_dir}", f"cache_dir={cache_dir}", f"out={out or tmp_path / 'run'}"]
        return parse_overrides(preset_config("tiny"), [*SMALL, *base, *items])

    return make
