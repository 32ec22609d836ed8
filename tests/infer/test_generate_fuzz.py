"""Fuzzed generate() against the full forward."""

from __future__ import annotations

import pytest
import torch

import foxacp
from tests.infer.models import full_greedy, tiny_model


@pytest.mark.parametrize("seed", range(6))
def test_fuzz(seed):
    g = torch.Generator().manual_seed(seed)
    variant = ["fox_pro", "fox", "transformer"][seed % 3]
    acp = bool(seed % 2) and variant != "transformer"
    model = tiny_model(variant, acp=acp)
    if variant != "transformer":
        with torch.no_grad():
            for b in model.blocks:
                b.attn.fgate.bias.copy_(torch.randn(4, generator=g) * 3)
    lens = torch.randint(1, 90, (int(torch.randint(1, 4, (), generator=g)),), generator=g).tolist()
    rows = [torch.randint(64, (n,), generator=g) for n in lens]
    chunk = [None, 1, 16, 17, 40][int(torch.randint(5, (), generator=g))]
    n = int(torch.randint(1, 40, (), generator=g))
    out = foxacp.generate(model, rows, n, prefill_chunk=chunk)
    for p, got in zip(rows, out, strict=True):
        assert torch.equal(got, full_greedy(model, p, n)), (variant, acp, lens, chunk, n)
    if variant == "fox_pro" and acp:
        ev = foxacp.generate(model, rows, n, prefill_chunk=chunk, evict=True)
        for a, b in zip(ev, out, strict=True):
            assert torch.equal(a, b)
