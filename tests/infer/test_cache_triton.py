"""Triton kernels (interpreter) through the cache, ragged rows, ACP, rebase, boundary chunk sizes."""

from __future__ import annotations

import pytest
import torch

from foxacp.ops.config import interpreting
from tests.infer.models import tiny_model

pytestmark = pytest.mark.skipif(not interpreting(), reason="Triton interpreter")


def toks(n, seed):
    return torch.randint(64, (n,), generator=torch.Generator().manual_seed(seed))


def model_of(backend, variant="fox_pro"):
    m = tiny_model(variant, acp=True, backend=backend)
    with torch.no_grad():
        for b in m.blocks:
            b.attn.fgate.bias.copy_(torch.tensor([-3.0, -0.5, 1.0, -4.0]))
    return m


def ragged_boundary_chunks(m, cache) -> list[torch.Tensor]:
    """Logits of ragged prompts (70, 5, 130 tokens) and then chunks of 16, 3, 1, 17, 1, 16 (around the 16-query
    decode-op boundary), rebasing after each."""
    o = [m(toks(n, b)[None], cache=cache.rows(b)) for b, n in enumerate((70, 5, 130))]
    for i, T in enumerate((16, 3, 1, 17, 1, 16)):
        o.append(m(torch.stack([toks(T, 10 + i + j) for j in range(3)]), cache=cache))
        cache.rebase()
    return o


@torch.no_grad()
@pytest.mark.parametrize("variant", ["fox_pro", "fox"])
def test_triton_ragged_boundary_chunks(variant):
    outs = []
    for backend in ("torch", "triton"):
        m = model_of(backend, variant)
        outs.append(ragged_boundary_chunks(m, m.new_cache(3, 200)))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)


@torch.no_grad()
def test_triton_paged_boundary_chunks():
    outs = []
    for backend in ("torch", None):
        m = model_of(backend)
        outs.append(ragged_boundary_chunks(m, m.new_cache(3, 200, evict=True, pool_fraction=1.0)))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)
