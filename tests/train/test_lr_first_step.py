"""The optimizer step that completes ``tokens`` uses the rate at ``tokens`` (optim.lr_at's contract): with a linear
warmup the k-th step (1-based) runs at lr * k * global_batch_tokens / warmup_tokens, never 0 (found by mutation
testing: a warmup one step late went unseen)."""

from __future__ import annotations

import pytest

from foxacp.train.loop import train
from foxacp.train.metrics import read_log


def test_each_step_uses_the_rate_of_the_tokens_it_completes(small_config):
    lr, warmup = 1e-3, 4096
    cfg = small_config("steps=3", f"lr={lr}", f"warmup_tokens={warmup}")
    gbt = cfg.global_batch_tokens
    train(cfg)
    recs = [r for r in read_log(cfg.run_dir) if r["kind"] == "train"]
    assert [r["step"] for r in recs] == [1, 2, 3]
    for r in recs:
        expected = lr * (r["step"] * gbt) / warmup  # linear warmup, the step's own tokens included
        assert r["lr"] == pytest.approx(expected, rel=1e-9), r
    assert recs[0]["lr"] > 0
