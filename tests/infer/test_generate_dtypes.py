"""Generate on float64 / bfloat16 models."""

from __future__ import annotations

import pytest
import torch

import foxacp
from tests.infer.models import full_greedy, tiny_model


@pytest.mark.parametrize("evict", [False, True])
@pytest.mark.parametrize("chunk", [None, 17])
def test_float64_model(evict, chunk):
    model = tiny_model("fox_pro", acp=True).double()
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(64, (n,), generator=g) for n in (5, 100)]
    out = foxacp.generate(model, rows, 30, evict=evict, prefill_chunk=chunk)
    for p, o in zip(rows, out, strict=True):
        assert torch.equal(o, full_greedy(model, p, 30))


@pytest.mark.parametrize("evict", [False, True])
def test_bf16_model_runs(evict):
    model = tiny_model("fox_pro", acp=True).to(torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(64, (n,), generator=g) for n in (5, 100)]
    out = foxacp.generate(model, rows, 30, evict=evict, prefill_chunk=17, temperature=0.8, top_p=0.9, seed=1)
    assert [len(o) for o in out] == [35, 130]
