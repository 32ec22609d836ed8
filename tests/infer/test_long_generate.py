"""Long greedy generation (thousands of steps, rebasing) is self-consistent with one full forward."""

from __future__ import annotations

import pytest
import torch

import foxacp
from tests.infer.models import tiny_model


@torch.no_grad()
@pytest.mark.parametrize(
    "variant,acp,evict",
    [("fox_pro", True, True), ("fox_pro", True, False), ("fox", False, False), ("fox", True, False)],
)
def test_long_greedy_consistent(variant, acp, evict):
    model = tiny_model(variant, acp=acp)
    with torch.no_grad():
        for b in model.blocks:
            b.attn.fgate.bias.copy_(torch.tensor([-0.5, -2.0, -1.0, -3.0]))
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(64, (n,), generator=g) for n in (3, 130)]
    n = 800
    out = foxacp.generate(model, rows, n, evict=evict, temperature=0.0)
    for p, seq in zip(rows, out, strict=True):
        logits = model(seq[None])[0, len(p) - 1 : -1]
        pred = logits.argmax(-1)
        gen = seq[len(p) :]
        bad = (pred != gen).nonzero()
        if len(bad):
            i = int(bad[0])
            top2 = logits[i].topk(2).values
            raise AssertionError((i, float(top2[0] - top2[1]), float(logits[i, gen[i]] - top2[0])))
