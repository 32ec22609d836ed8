"""Fused projections, autocast, ACP stats through the cache."""

from __future__ import annotations

import pytest
import torch

import foxacp
from tests.infer.models import tiny_model


def toks(n, seed):
    return torch.randint(64, (n,), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
@pytest.mark.parametrize("variant", ["fox_pro", "fox", "transformer"])
@pytest.mark.parametrize("size", [1, 3, 17])
def test_fused_projections_cached_equals_full(variant, size):
    model = tiny_model(variant)
    seq = torch.stack([toks(40, 1), toks(40, 2)])
    full = model(seq)
    cache = model.new_cache(2, 48)
    with model.fused_projections():
        out = [model(seq[:, s : s + size], cache=cache) for s in range(0, 40, size)]
    torch.testing.assert_close(torch.cat(out, 1), full, rtol=1e-4, atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("evict", [False, True])
def test_record_acp_stats_generate(evict):
    model = tiny_model("fox_pro", acp=True, record_acp_stats=True)
    rows = [toks(70, 0), toks(20, 1)]
    model2 = tiny_model("fox_pro", acp=True)
    a = foxacp.generate(model, rows, 20, evict=evict, prefill_chunk=17)
    b = foxacp.generate(model2, rows, 20, evict=evict, prefill_chunk=17)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@torch.no_grad()
@pytest.mark.parametrize("size", [1, 3, 17])
def test_autocast_bf16_cached_close_to_autocast_full(size):
    model = tiny_model("fox_pro")
    seq = torch.stack([toks(40, 1), toks(40, 2)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(seq).float()
        cache = model.new_cache(2, 48)
        out = torch.cat([model(seq[:, s : s + size], cache=cache) for s in range(0, 40, size)], 1).float()
    torch.testing.assert_close(out, full, rtol=5e-2, atol=5e-2)
