"""Gradient accumulation gives the update of one big micro-batch also where micro-batches hold different numbers of
target tokens (packed documents mask the labels that cross a boundary) and with passkey rows mixed in: the loss is a
per-token mean over the whole global batch, as loop.py's docstring says, not a mean of micro-batch means."""

from __future__ import annotations

import pytest
import torch

from foxacp.train.checkpoint import load_weights, resolve_checkpoint
from foxacp.train.loop import train

from .run_helpers import losses


@pytest.mark.parametrize(
    "common, small, big",
    [
        (["pack=true"], "micro_batch_size=4", "micro_batch_size=8"),
        (
            ["passkey_fraction=0.5", "seq_len=512", "global_batch_tokens=2048"],
            "micro_batch_size=2",
            "micro_batch_size=4",
        ),
    ],
    ids=["packed", "passkey"],
)
def test_accumulated_step_equals_one_micro_batch(small_config, tmp_path, common, small, big):
    a = small_config("steps=3", *common, small, out=tmp_path / "accum")
    b = small_config("steps=3", *common, big, out=tmp_path / "one")
    train(a)
    train(b)
    la, lb = losses(a.run_dir), losses(b.run_dir)
    assert la.keys() == lb.keys() == {1, 2, 3}
    for step in la:
        assert la[step] == pytest.approx(lb[step], rel=1e-5)
    wa, wb = load_weights(resolve_checkpoint(a.run_dir)), load_weights(resolve_checkpoint(b.run_dir))
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5, msg=name)
