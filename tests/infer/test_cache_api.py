"""The cache API (dtype, boundary chunk sizes, rebase mixed in, reset/reuse of the evicting cache)."""

from __future__ import annotations

import pytest
import torch

from foxacp.model import FoxLM
from tests.infer.models import tiny_model

STEPS = range(100, 150)  # one-token decode steps after a 100-token prefill


def toks(n, seed):
    return torch.randint(64, (n,), generator=torch.Generator().manual_seed(seed))


def fast(variant="fox_pro", acp=False, bias=(-6.0, -0.5, 1.0, 3.0)) -> FoxLM:
    m = tiny_model(variant, acp=acp)
    with torch.no_grad():
        for b in m.blocks:
            b.attn.fgate.bias.copy_(torch.tensor(bias))
    return m


@torch.no_grad()
@pytest.mark.parametrize("variant", ["fox_pro", "fox"])
@pytest.mark.parametrize("sizes", [[1, 3, 16, 17, 1, 16, 17, 3], [17, 16, 1, 1, 33]])
def test_mixed_chunks_with_rebase_equal_full_forward(variant, sizes):
    model = fast(variant)
    seq = torch.stack([toks(200, 1), toks(200, 2)])
    full = model(seq)
    cache = model.new_cache(2, 256)
    out, s, i = [], 0, 0
    while s < 200:
        n = min(sizes[i % len(sizes)], 200 - s)
        out.append(model(seq[:, s : s + n], cache=cache))
        cache.rebase()
        s, i = s + n, i + 1
    torch.testing.assert_close(torch.cat(out, 1), full, rtol=1e-4, atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-4), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("chunk", [1, 3, 17])
def test_a_cache_of_another_dtype_on_a_float32_model(dtype, tol, chunk):
    """A float32 model decoding into a float64 or bfloat16 cache, in chunks: the full forward's float32 logits, to
    the cache dtype's rounding."""
    model = fast("fox_pro")
    seq = torch.stack([toks(60, 1), toks(60, 2)])
    full = model(seq)
    cache = model.new_cache(2, 64, dtype=dtype)
    got = torch.cat([model(seq[:, s : s + chunk], cache=cache) for s in range(0, 60, chunk)], 1)
    assert got.dtype == full.dtype
    torch.testing.assert_close(got, full, rtol=tol, atol=tol)


@torch.no_grad()
def test_overflow_error_ragged():
    model = fast("fox")
    cache = model.new_cache(2, 10)
    model(toks(8, 0)[None], cache=cache.rows(0))
    model(toks(2, 0)[None], cache=cache.rows(1))
    with pytest.raises(ValueError, match="max_len"):
        model(torch.stack([toks(3, 1), toks(3, 2)]), cache=cache)
    assert cache.lengths.tolist() == [8, 2]


@torch.no_grad()
@pytest.mark.parametrize("evict", [False, True])
def test_reset_then_reuse_gives_fresh_logits(evict):
    model = fast("fox_pro", acp=True)
    kw = dict(evict=True, pool_fraction=1.0) if evict else {}
    seq = torch.stack([toks(150, 1), toks(150, 2)])
    fresh = model.new_cache(2, 200, **kw)
    want = torch.cat(
        [model(seq[:, :100], cache=fresh)] + [model(seq[:, t : t + 1], cache=fresh) for t in range(100, 150)], 1
    )
    cache = model.new_cache(2, 200, **kw)
    other = torch.stack([toks(180, 3), toks(180, 4)])
    model(other[:, :120], cache=cache)
    for t in range(120, 180):
        model(other[:, t : t + 1], cache=cache)
        if t % 16 == 0:
            cache.rebase()
    cache.reset()
    got = torch.cat(
        [model(seq[:, :100], cache=cache)] + [model(seq[:, t : t + 1], cache=cache) for t in range(100, 150)], 1
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
