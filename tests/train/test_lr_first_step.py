"""The optimizer step that completes ``tokens`` uses the rate at ``tokens`` (optim.lr_at's contract): with a linear
warmup the k-th step (1-based) runs at lr * k * global_batch_tokens / warmup_tokens, never 0 (found by mutation
testing: a warmup one step late went unseen)."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest
import torch

from foxacp.train.config import parse_overrides, preset_config
from foxacp.train.loop import train
from foxacp.train.metrics import read_log

SMALL = [
    "model.n_layers=2",
    "model.d_model=64",
    "model.n_heads=2",
    "model.attn_backend=torch",
    "seq_len=128",
    "micro_batch_size=4",
    "global_batch_tokens=1024",
    "log_every=1",
    "eval_every=0",
    "eval_batches=2",
    "ckpt_every=0",
    "progress=false",
    "tensorboard=false",
    "device=cpu",
]


@pytest.fixture
def corpus(tmp_path) -> Path:
    src = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in sorted(src.glob("*.py")) if 8_000 < p.stat().st_size < 40_000][:30]
    out = tmp_path / "corpus"
    out.mkdir()
    for p in files:
        shutil.copy(p, out / p.name)
    return out


def test_each_step_uses_the_rate_of_the_tokens_it_completes(corpus, tmp_path):
    torch.set_num_threads(1)
    lr, gbt, warmup = 1e-3, 1024, 4096
    cfg = parse_overrides(
        preset_config("tiny"),
        [
            *SMALL,
            "steps=3",
            f"lr={lr}",
            f"warmup_tokens={warmup}",
            f"corpus={corpus}",
            f"cache_dir={tmp_path / 'cache'}",
            f"out={tmp_path / 'run'}",
        ],
    )
    train(cfg)
    recs = [r for r in read_log(cfg.run_dir) if r["kind"] == "train"]
    assert [r["step"] for r in recs] == [1, 2, 3]
    for r in recs:
        expected = lr * (r["step"] * gbt) / warmup  # linear warmup, the step's own tokens included
        assert r["lr"] == pytest.approx(expected, rel=1e-9), r
    assert recs[0]["lr"] > 0
