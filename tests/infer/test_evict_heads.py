"""Eviction with MHA and MQA layouts."""

from __future__ import annotations

import pytest
import torch

import foxacp
from foxacp.model import FoxLM, ModelConfig
from tests.model.test_paged_cache import check_no_leak


@pytest.mark.parametrize("kv", [None, 1, 4])
def test_evict_kv_layouts(kv):
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=kv, attn_backend="torch", acp=True, init_std=0.1
    )
    model = FoxLM(cfg).eval()
    with torch.no_grad():
        for b in model.blocks:
            b.attn.fgate.bias.copy_(torch.tensor([-6.0, -5.0, -7.0, 3.0]))
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(64, (n,), generator=g) for n in (150, 20)]
    a = foxacp.generate(model, rows, 90, evict=True, prefill_chunk=33, pool_fraction=1.0)
    b = foxacp.generate(model, rows, 90, prefill_chunk=33)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    cache = model.new_cache(2, 300, evict=True, pool_fraction=1.0)
    from foxacp.infer.generate import prefill

    with torch.no_grad():
        last = prefill(model, cache, rows, 40)
        for _ in range(80):
            last = model(last.argmax(-1)[:, None], cache=cache)[:, -1]
    check_no_leak(cache)
