"""The evicting cache under mixed chunk sizes, rebases, mixed-speed groups."""

from __future__ import annotations

import pytest
import torch

import foxacp
from tests.infer.models import tiny_model
from tests.model.test_paged_cache import check_no_leak


def toks(n, seed):
    return torch.randint(64, (n,), generator=torch.Generator().manual_seed(seed))


def model_with(bias):
    m = tiny_model("fox_pro", acp=True)
    with torch.no_grad():
        for b in m.blocks:
            b.attn.fgate.bias.copy_(torch.tensor(bias))
    return m


@torch.no_grad()
@pytest.mark.parametrize("bias", [(-6.0, 4.0, -7.0, 3.0), (-3.0, -4.0, -5.0, -2.0), (-0.3, -0.8, -6.0, -5.0)])
@pytest.mark.parametrize("sizes", [[1], [3, 1, 17, 16, 1, 70]])
def test_evict_vs_keep_mixed_chunks_and_rebases(bias, sizes):
    model = model_with(bias)
    L = 520
    seq = torch.stack([toks(L, 1), toks(L, 2), toks(L, 3)])
    caches = []
    for freeing in (True, False):
        c = model.new_cache(3, 600, evict=True, pool_fraction=1.0)
        c.freeing = freeing
        caches.append(c)
    outs = [[], []]
    # different row lengths first: row views
    for k, c in enumerate(caches):
        outs[k].append(model(seq[:1, :37], cache=c.rows(0)))
        outs[k].append(model(seq[1:2, :37], cache=c.rows(1)))
        outs[k].append(model(seq[2:3, :37], cache=c.rows(2)))
    s, i = 37, 0
    while s < L:
        n = min(sizes[i % len(sizes)], L - s)
        for k, c in enumerate(caches):
            outs[k].append(model(seq[:, s : s + n], cache=c))
            if i % 5 == 4:
                c.rebase()
        s, i = s + n, i + 1
    a = torch.cat(outs[0][3:], 1)
    b = torch.cat(outs[1][3:], 1)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    full = model(seq)[:, 37:]
    torch.testing.assert_close(a, full, atol=2e-3, rtol=2e-3)
    check_no_leak(caches[0])
    caches[0].reset()
    for layer in caches[0].layers:
        assert layer.pool.n_free == layer.pool.capacity


def test_generate_evict_long_all_fast():
    model = model_with((-3.0, -4.0, -5.0, -2.0))
    rows = [toks(n, i) for i, n in enumerate((3, 100, 257))]
    report = {}
    a = foxacp.generate(model, rows, 700, evict=True, memory_report=report, prefill_chunk=40)
    b = foxacp.generate(model, rows, 700, prefill_chunk=40)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert report["fraction_held"] < 0.5
