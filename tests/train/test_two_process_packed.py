"""Two processes (FSDP2 over gloo) on packed batches: the ranks' micro-batches hold different numbers of target
tokens, and the loss, its gradient (so the next steps' losses) and the gradient norm are still those of one process:
the target count is summed over ranks before it divides."""

from __future__ import annotations

import pytest

from foxacp.train.loop import train

from .run_helpers import records, train_two_processes


def test_two_processes_train_packed_batches_like_one(small_config, corpus_dir, cache_dir, tmp_path):
    one = small_config("steps=3", "pack=true", out=tmp_path / "one")
    train(one)
    two = tmp_path / "two"
    train_two_processes(corpus_dir, cache_dir, two, "steps=3", "pack=true")
    a, b = records(one.run_dir, "train"), records(two, "train")
    assert a.keys() == b.keys() == {1, 2, 3}
    for step in a:
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-5)
        assert b[step]["grad_norm"] == pytest.approx(a[step]["grad_norm"], rel=1e-4)
        assert b[step]["acp_saving"] == pytest.approx(a[step]["acp_saving"], abs=1e-9)
