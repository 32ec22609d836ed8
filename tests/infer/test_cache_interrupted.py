"""A cached forward that raises part-way (after some layers wrote their gate totals and token-shift rows) leaves the
cache as it was, so a retry gives the uninterrupted logits; an unchecked one-token step marks the cache instead."""

from __future__ import annotations

import pytest
import torch

from foxacp.model import FoxLM, ModelConfig


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("variant", ["fox_pro", "fox"])
@pytest.mark.parametrize("evict", [False, True])
@pytest.mark.parametrize("t", [1, 5, 30])
def test_retry_after_an_exception_mid_forward(variant, evict, t):
    if evict and variant != "fox_pro":
        pytest.skip("eviction needs fox_pro")
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, variant=variant, acp=True,
                      fgate_bias_init=1.0, init_std=0.1, attn_backend="torch")  # fmt: skip
    m = FoxLM(cfg).eval()
    ids = torch.randint(0, 64, (1, 31 + t))  # the last token: one decode step after the retried call
    kw = {"evict": True, "pool_fraction": 1.0} if evict else {}
    with torch.no_grad():
        ref_cache = m.new_cache(1, 64, **kw)
        m(ids[:, :30], cache=ref_cache)
        ref = m(ids[:, 30:-1], cache=ref_cache)
        ref_next = m(ids[:, -1:], cache=ref_cache)

        cache = m.new_cache(1, 64, **kw)
        m(ids[:, :30], cache=cache)

        def interrupt(mod, args):
            raise Interrupt

        hook = m.blocks[1].register_forward_pre_hook(interrupt)
        with pytest.raises(Interrupt):
            m(ids[:, 30:-1], cache=cache)
        hook.remove()
        assert cache.lengths.tolist() == [30]
        retry = m(ids[:, 30:-1], cache=cache)
        retry_next = m(ids[:, -1:], cache=cache)
    torch.testing.assert_close(retry, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(retry_next, ref_next, atol=1e-5, rtol=1e-5)


def interrupted_step(n_tokens: int):
    """A model, its tokens (1, n_tokens), and a cache of the first 10 after a one-token step with value checks off
    (a CUDA graph's or a compiled loop's, which keeps no snapshot) that raised in the second layer."""
    from foxacp.ops import set_value_checks

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, attn_backend="torch")
    m = FoxLM(cfg).eval()
    ids = torch.randint(0, 64, (1, n_tokens))
    with torch.no_grad():
        cache = m.new_cache(1, 16)
        m(ids[:, :10], cache=cache)
        saved = cache.snapshot()
        hook = m.blocks[1].register_forward_pre_hook(lambda mod, args: (_ for _ in ()).throw(Interrupt()))
        checks = set_value_checks(False)
        try:
            with pytest.raises(Interrupt):
                m(ids[:, 10:11], cache=cache)
        finally:
            set_value_checks(checks)
            hook.remove()
    return m, ids, cache, saved


def test_an_unchecked_step_that_raises_marks_the_cache_until_reset_or_restore():
    """A one-token step with value checks off keeps no snapshot, which would be copies in every step: the cache is
    refused until reset or restored."""
    m, ids, cache, saved = interrupted_step(12)
    assert cache.interrupted
    with torch.no_grad():
        with pytest.raises(ValueError, match="raised part-way"):
            m(ids[:, 10:11], cache=cache)
        cache.restore(saved)
        retried = m(ids[:, 10:12], cache=cache)
        full = m(ids)
    torch.testing.assert_close(retried, full[:, 10:12], atol=1e-5, rtol=1e-5)
    cache.reset()
    assert not cache.interrupted


def test_a_keyboard_interrupt_mid_forward_leaves_the_cache_as_it_was():
    """Ctrl-C is a BaseException, not an Exception: a checked call still restores the cache, so a retry gives the
    uninterrupted logits."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, attn_backend="torch")
    m = FoxLM(cfg).eval()
    ids = torch.randint(0, 64, (1, 14))

    def interrupt(mod, args):
        raise KeyboardInterrupt

    with torch.no_grad():
        cache = m.new_cache(1, 16)
        m(ids[:, :10], cache=cache)
        hook = m.blocks[1].register_forward_pre_hook(interrupt)
        with pytest.raises(KeyboardInterrupt):
            m(ids[:, 10:], cache=cache)
        hook.remove()
        assert cache.lengths.tolist() == [10] and not cache.interrupted
        retried = m(ids[:, 10:], cache=cache)
        full = m(ids)
    torch.testing.assert_close(retried, full[:, 10:], atol=1e-5, rtol=1e-5)


def test_reset_takes_an_interrupted_cache_back_into_use():
    m, ids, cache, _ = interrupted_step(11)
    assert cache.interrupted
    cache.reset()
    with torch.no_grad():
        again = m(ids, cache=cache)
        full = m(ids)
    assert not cache.interrupted
    torch.testing.assert_close(again, full, atol=1e-5, rtol=1e-5)
