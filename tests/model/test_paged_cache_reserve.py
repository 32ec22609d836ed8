"""model/paged.py's reserve: a prepare with a shorter look-ahead than an earlier one
keeps the blocks already held (``top`` only grows); a later longer prepare takes no block twice, and held +
free stays the whole pool (no leak). Uses test_paged_cache's model and leak check."""

import torch

from tests.model.test_paged_cache import check_no_leak, fast_forgetting


@torch.no_grad()
def test_a_shorter_prepare_after_a_longer_one_keeps_the_held_blocks():
    model = fast_forgetting()
    cache = model.new_cache(2, 256, evict=True, pool_fraction=1.0)
    cache.freeing = False
    cache.prepare(200)  # 4 blocks per (row, KV head)
    held = [layer.held().clone() for layer in cache.layers]
    assert int(held[0].min()) == 4
    cache.prepare(1)  # the next position only: nothing to take or give
    for layer, h in zip(cache.layers, held, strict=True):
        assert torch.equal(layer.held(), h)
    check_no_leak(cache)
    cache.prepare(200)
    for layer, h in zip(cache.layers, held, strict=True):
        assert torch.equal(layer.held(), h)
    check_no_leak(cache)
