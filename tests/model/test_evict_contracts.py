"""The evicting cache refuses what would give wrong logits: one-token steps past the blocks it holds (with
auto_prepare off and value checks on), QK-norm gains changed behind the version counter, a non-floating dtype.
Each test failed before its fix (found by a user-journey review)."""

from __future__ import annotations

import pytest
import torch

from foxacp.model import FoxLM, ModelConfig
from foxacp.ops import set_value_checks


def _model(bias: list[float], **kw) -> FoxLM:
    torch.manual_seed(0)
    n = len(bias)
    cfg = ModelConfig(vocab_size=64, n_layers=1, d_model=16 * n, n_heads=n, n_kv_heads=n, attn_backend="torch", **kw)
    model = FoxLM(cfg).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.fgate.bias.copy_(torch.tensor(bias))
    return model


def _toks(shape, seed=0):
    return torch.randint(64, shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_one_token_steps_past_the_held_blocks_are_refused_and_right_after_prepare():
    model = _model([3.0, 3.0])  # slow forgetting: nothing evicted
    seq = _toks((2, 80))
    full = model(seq)
    cache = model.new_cache(2, 200, evict=True, pool_fraction=1.0)
    model(seq[:, :60], cache=cache)  # holds block 0 (positions 0-63) of each (row, KV head)
    cache.auto_prepare = False
    got = [model(seq[:, t : t + 1], cache=cache) for t in range(60, 64)]  # inside the held block: fine
    with pytest.raises(ValueError, match="prepare"):
        model(seq[:, 64:65], cache=cache)  # before: written into the shared scratch block, 0.24 off
    assert int(cache.lengths[0]) == 64  # refused before anything moved
    cache.prepare(16)
    got += [model(seq[:, t : t + 1], cache=cache) for t in range(64, 80)]
    torch.testing.assert_close(torch.cat(got, 1), full[:, 60:], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_unchecked_steps_skip_the_reserved_check():
    model = _model([3.0, 3.0])
    cache = model.new_cache(1, 200, evict=True, pool_fraction=1.0)
    model(_toks((1, 60)), cache=cache)
    cache.auto_prepare = False
    previous = set_value_checks(False)  # generate's steps: no host read; generate prepares every CHECK_EVERY
    try:
        for t in range(4):
            model(_toks((1, 1), t), cache=cache)
    finally:
        set_value_checks(previous)
    assert int(cache.lengths[0]) == 64


@pytest.mark.parametrize("through", ["data", "in_place"])
@torch.no_grad()
def test_gains_changed_after_the_cache_was_made_are_refused(through):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, attn_backend="torch",
                      init_std=0.1)  # fmt: skip
    model = FoxLM(cfg).eval()
    stale = model.new_cache(1, 400, evict=True, pool_fraction=1.0)
    model(_toks((1, 5)), cache=stale)  # unchanged gains: accepted
    for block in model.blocks:
        w = block.attn.q_norm.weight
        (w.data if through == "data" else w).mul_(10.0)  # .data bumps no version: the stamp alone missed it
    with pytest.raises(ValueError, match="gains changed"):
        model(_toks((1, 1), 3), cache=stale)
    with pytest.raises(ValueError, match="gains changed"):
        model(_toks((1, 7), 3), cache=stale)
    fresh = model.new_cache(1, 400, evict=True, pool_fraction=1.0)
    seq = _toks((1, 30), 3)
    torch.testing.assert_close(model(seq, cache=fresh), model(seq), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_a_non_floating_dtype_is_refused_when_either_cache_is_made(dtype):
    model = _model([-6.0, 3.0])
    for evict in (False, True):
        with pytest.raises(TypeError, match="floating dtype"):
            model.new_cache(1, 100, evict=evict, dtype=dtype)
