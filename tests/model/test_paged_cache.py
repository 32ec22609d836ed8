"""The evicting cache (model/paged.py): the same logits as ACP without eviction, within the eps bound of exact
decoding, blocks really freed and never leaked, a clear error when the pool runs out or no static bound exists."""

from __future__ import annotations

import pytest
import torch

import foxacp
from foxacp.infer.generate import prefill
from foxacp.model import FoxLM, ModelConfig
from foxacp.model.paged import CachePoolExhausted, PagedKVCache
from tests.train.conftest import one_thread  # noqa: F401  (autouse: tiny models run fastest on one thread)

PROMPTS = (150, 97, 200)  # different lengths: a batched common part, then each row's rest alone


def fast_forgetting(backend: str | None = "torch", **kw) -> FoxLM:
    """FoX Pro with GQA (4 query heads, 2 KV heads); heads 0 and 1 (KV head 0) forget within a few tokens."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, attn_backend=backend, **kw)
    model = FoxLM(cfg).eval()
    with torch.no_grad():
        for block in model.blocks:
            if block.attn.fgate is not None:
                block.attn.fgate.bias.copy_(torch.tensor([-6.0, -7.0, 3.0, 4.0]))
    return model


def prompts(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(64, (n,), generator=gen) for n in PROMPTS]


@torch.no_grad()
def decode(model: FoxLM, cache, steps: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefill PROMPTS in chunks, then greedy steps: (tokens (B, steps), logits (B, steps + 1, V))."""
    last = prefill(model, cache, prompts(), chunk)
    logits, tokens = [last], []
    for _ in range(steps):
        tokens.append(logits[-1].argmax(-1))
        logits.append(model(tokens[-1][:, None], cache=cache)[:, -1].float())
    return torch.stack(tokens, 1), torch.stack(logits, 1)


def check_no_leak(cache: PagedKVCache) -> None:
    """Held blocks are distinct, none is also free, and held + free is the whole pool."""
    for layer in cache.layers:
        held = [
            int(layer.table_host[b, h, j])
            for b in range(cache.batch_size)
            for h in range(layer.table.shape[1])
            for j in range(int(layer.start_host[b, h]), int(layer.top[b]))
        ]
        free = layer.pool.free[: layer.pool.n_free].tolist()
        assert len(set(held)) == len(held) and not set(held) & set(free)
        assert len(held) + len(free) == layer.pool.capacity
        assert torch.equal(layer.table.cpu(), layer.table_host)


@pytest.mark.parametrize("chunk", [16, 50])  # the decode-sized chunk, and a longer one
def test_eviction_equals_acp_without_eviction(chunk):
    model = fast_forgetting()
    B, max_len, steps = len(PROMPTS), 256, 40
    evicting = model.new_cache(B, max_len, evict=True, pool_fraction=1.0)
    keeping = model.new_cache(B, max_len, evict=True, pool_fraction=1.0)
    keeping.freeing = False
    tok_e, logits_e = decode(model, evicting, steps, chunk)
    tok_k, logits_k = decode(model, keeping, steps, chunk)
    assert torch.equal(tok_e, tok_k)
    torch.testing.assert_close(logits_e, logits_k, atol=1e-6, rtol=1e-6)

    report = evicting.memory_report()
    for layer in report["layers"]:
        fast, slow = layer["per_kv_head_fraction"]
        assert fast < 0.3 and slow > 0.7  # KV head 0 keeps its last block or two; KV head 1 keeps all
    assert report["bytes_held"] < keeping.memory_report()["bytes_held"]
    assert report["guarantee"]["L_max"] == max_len and "delta" in report["guarantee"]
    check_no_leak(evicting)
    evicting.reset()
    assert all(layer.pool.n_free == layer.pool.capacity for layer in evicting.layers)

    # Within the eps bound of exact decoding (pruned weights are below eps / L_max): the same tokens, and the
    # logits of a full cache without ACP agree to well below the bound's effect.
    exact = fast_forgetting(acp=False)
    tok_x, logits_x = decode(exact, exact.new_cache(B, max_len), steps, chunk)
    assert torch.equal(tok_e, tok_x)
    torch.testing.assert_close(logits_e, logits_x, atol=1e-4, rtol=1e-4)


def test_triton_kernel_in_the_model():
    """The Triton paged kernel (interpreter on CPU) decodes as the PyTorch twin does, with eviction."""
    twin, kernel = fast_forgetting("torch"), fast_forgetting(None)
    out = [decode(m, m.new_cache(3, 256, evict=True, pool_fraction=1.0), 6, 64) for m in (twin, kernel)]
    assert torch.equal(out[0][0], out[1][0])
    torch.testing.assert_close(out[0][1], out[1][1], atol=1e-4, rtol=1e-4)


def test_generate_with_eviction():
    model = fast_forgetting()
    rows = prompts(1)
    report: dict = {}
    evicted = foxacp.generate(model, rows, 30, prefill_chunk=32, evict=True, pool_fraction=0.7, memory_report=report)
    plain = foxacp.generate(model, rows, 30, prefill_chunk=32)
    assert all(torch.equal(a, b) for a, b in zip(evicted, plain, strict=True))
    assert report["fraction_held"] < 0.7 and "guarantee: eps" in report["summary"]


def test_pool_too_small_raises_before_writing():
    model = fast_forgetting()
    cache = model.new_cache(2, 256, evict=True, pool_blocks=3)
    with pytest.raises(CachePoolExhausted, match="pool_blocks or pool_fraction"):
        model(torch.zeros(2, 130, dtype=torch.long), cache=cache)
    assert int(cache.lengths.max()) == 0
    with pytest.raises(ValueError, match="pool"):
        foxacp.generate(model, prompts(), 5, evict=True, pool_fraction=0.05)


def test_eviction_needs_a_static_bound_and_acp():
    with pytest.raises(ValueError, match="QK-norm"):
        fast_forgetting(variant="fox").new_cache(1, 64, evict=True)
    with pytest.raises(ValueError, match="ACP"):
        fast_forgetting(acp=False).new_cache(1, 64, evict=True)
    with pytest.raises(ValueError, match="pool_fraction"):
        fast_forgetting().new_cache(1, 64, evict=True, pool_fraction=1.5)


def test_restore_refuses_after_eviction():
    # Blocks freed after a snapshot may be reused: restoring would leave the restored queries without keys
    # they still need, so it raises (changing nothing); with freeing off, restore undoes the steps.
    model = fast_forgetting()
    seq = prompts()[2][None]
    with torch.no_grad():
        full = model(seq)
        for freeing in (True, False):
            cache = model.new_cache(1, 256, evict=True, pool_fraction=1.0)
            model(seq[:, :130], cache=cache)
            cache.freeing = freeing
            saved = cache.snapshot()
            for t in range(130, 190):
                model(seq[:, t : t + 1], cache=cache)
            if freeing:
                with pytest.raises(ValueError, match="freed since"):
                    cache.restore(saved)
                assert cache.lengths.tolist() == [190]
                continue
            cache.restore(saved)
            again = torch.cat([model(seq[:, t : t + 1], cache=cache) for t in range(130, 140)], 1)
            torch.testing.assert_close(again, full[:, 130:140], rtol=1e-4, atol=1e-4)


def _gained(bias: list[float], gain: float, **kw) -> FoxLM:
    from tests.infer.models import tiny_model

    model = tiny_model("fox_pro", acp=True, **kw)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.fgate.bias.copy_(torch.tensor(bias))
            block.attn.q_norm.weight.mul_(gain)
            block.attn.k_norm.weight.mul_(gain)
    return model


@torch.no_grad()
def test_chunked_prefill_is_near_the_full_forward():
    """At log eps = -30 pruning shows nowhere: the gap is arithmetic. A 512-token chunk read its own c anchored at
    its end (thousands of nats away at 2-5 nats per token): 1.1e-4 off; the paged op now runs on pieces of the
    chunk (experiment 059)."""
    model = _gained([-2.0, -3.0, -4.0, -5.0], 2.0, log_eps=-30.0)
    seq = torch.randint(64, (1, 1024), generator=torch.Generator().manual_seed(5))
    full = model(seq)
    cache = model.new_cache(1, 1024, evict=True, pool_fraction=1.0)
    got = torch.cat([model(seq[:, s : s + 512], cache=cache) for s in range(0, 1024, 512)], 1)
    assert (got - full).abs().max().item() < 3e-5


@torch.no_grad()
def test_a_cache_made_before_the_gains_changed_is_refused():
    """Its static bound (and what it evicted) holds only for the gains it was made with: ones 4x larger gave
    logits 2.7 off. A new cache is fine."""
    model = _gained([-1.0, -1.5, -2.0, -2.5], 1.0)
    stale = model.new_cache(1, 400, evict=True, pool_fraction=1.0)
    for block in model.blocks:
        block.attn.q_norm.weight.mul_(4.0)
    seq = torch.randint(64, (1, 300), generator=torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="gains changed"):
        model(seq[:, :1], cache=stale)
    fresh = model.new_cache(1, 400, evict=True, pool_fraction=1.0)
    got = torch.cat([model(seq[:, s : s + 1], cache=fresh) for s in range(300)], 1)
    assert (got - model(seq)).abs().max().item() < 1e-3


@torch.no_grad()
def test_restore_refuses_after_reset():
    """reset gives every block back (and puts the starts back to 0, so comparing starts missed it): restoring
    would attend to blocks held by no one (3.7 off). The full cache continues right after the same calls."""
    model = fast_forgetting()
    for block in model.blocks:
        block.attn.fgate.bias.fill_(3.0)  # slow forgetting: nothing evicted, the starts stay 0
    seq = prompts()[2][None][:, :140]
    full = model(seq)[:, 100:]
    for evict in (False, True):
        cache = model.new_cache(1, 200, evict=evict, **({"pool_fraction": 1.0} if evict else {}))
        model(seq[:, :100], cache=cache)
        saved = cache.snapshot()
        cache.reset()
        if evict:
            with pytest.raises(ValueError, match="freed since"):
                cache.restore(saved)
            check_no_leak(cache)
            continue
        cache.restore(saved)
        torch.testing.assert_close(model(seq[:, 100:], cache=cache), full, atol=1e-4, rtol=1e-4)
