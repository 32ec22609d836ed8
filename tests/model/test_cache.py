"""The decoding cache: prefill and decoding in any chunks give the full forward's logits; gate precision."""

from dataclasses import replace

import pytest
import torch

from foxacp.model import FoxLM, ModelConfig
from foxacp.model.cache import REBASE_AT
from foxacp.model.config import VARIANTS
from foxacp.ops.config import interpreting
from tests.train.conftest import one_thread  # noqa: F401  (autouse: tiny models run fastest on one thread)


def tiny(variant: str = "fox_pro", **kw) -> ModelConfig:
    kw = dict(vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, attn_backend="torch") | kw
    return ModelConfig(variant=variant, **kw)


def model_of(variant: str, **kw) -> FoxLM:
    torch.manual_seed(0)
    # b_f = -1 forgets fast enough that the gates matter within the short test sequences.
    return FoxLM(tiny(variant, fgate_bias_init=-1.0, acp=False, **kw)).eval()


def tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(64, (n,), generator=torch.Generator().manual_seed(seed))


def feed(model: FoxLM, cache, seq: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    """Logits of seq (B, T) fed to the cache in the given chunk sizes (cycled), concatenated over time."""
    out, start, i = [], 0, 0
    while start < seq.shape[1]:
        n = chunks[i % len(chunks)]
        out.append(model(seq[:, start : start + n], cache=cache))
        start, i = start + n, i + 1
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chunks", [[1], [3], [64], [70, 1], [5, 64, 2]])
def test_chunked_prefill_and_decoding_equal_the_full_forward(variant, chunks):
    model = model_of(variant)
    seq = torch.stack([tokens(131, 1), tokens(131, 2)])
    with torch.no_grad():
        full = model(seq)
        cache = model.new_cache(2, 140)
        got = feed(model, cache, seq, chunks)
    torch.testing.assert_close(got, full, rtol=1e-4, atol=1e-4)
    assert cache.lengths.tolist() == [131, 131]


@pytest.mark.skipif(not interpreting(), reason="runs the Triton kernels in the CPU interpreter")
@pytest.mark.parametrize("variant", VARIANTS)
def test_triton_kernels_through_the_cache(variant):
    # Chunks of 70 (training kernels against the cached keys) and of 1 and 3 (decode kernel).
    model = model_of(variant, attn_backend="triton")
    seq = torch.stack([tokens(100, 1), tokens(100, 2)])
    with torch.no_grad():
        full = model(seq)
        got = feed(model, model.new_cache(2, 100), seq, [70, 1, 3])
    torch.testing.assert_close(got, full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_ragged_batch_each_row_continues_from_its_own_end(variant):
    # Rows prefilled separately to lengths 37, 90 and 5, then decoded together one token at a time: every
    # row's logits are its own full forward's, so no padding or other row's tokens are attended.
    model = model_of(variant)
    seqs = [tokens(37 + 6, 3), tokens(90 + 6, 4), tokens(5 + 6, 5)]
    with torch.no_grad():
        cache = model.new_cache(3, 100)
        for b, s in enumerate(seqs):
            model(s[None, :-6], cache=cache.rows(b))
        assert cache.lengths.tolist() == [37, 90, 5]
        steps = [model(torch.stack([s[-6 + i] for s in seqs])[:, None], cache=cache) for i in range(6)]
        steps.append(model(torch.stack([s[-2:] for s in seqs]), cache=model_copy_cache(model, cache, seqs)))
        for b, s in enumerate(seqs):
            full = model(s[None])[0]
            got = torch.cat([step[b] for step in steps[:-1]])
            torch.testing.assert_close(got, full[-6:], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(steps[-1][b], full[-2:], rtol=1e-4, atol=1e-4)


def model_copy_cache(model: FoxLM, cache, seqs):
    """A fresh cache holding every sequence but its last two tokens (ragged multi-token step)."""
    fresh = model.new_cache(len(seqs), cache.max_len)
    for b, s in enumerate(seqs):
        model(s[None, :-2], cache=fresh.rows(b))
    return fresh


@pytest.mark.parametrize("variant", ["fox_pro", "fox"])
def test_acp_decoding_within_its_bound(variant):
    torch.manual_seed(0)
    cfg = tiny(variant, init_std=0.1, fgate_bias_init=-1.0, record_acp_stats=True)
    model, exact = FoxLM(cfg).eval(), FoxLM(replace(cfg, acp=False)).eval()
    exact.load_state_dict(model.state_dict())
    seq = tokens(300, 6)[None]
    with torch.no_grad():
        dense = exact(seq)
        cache = model.new_cache(1, 300)
        got = feed(model, cache, seq, [200, 1])
    assert max(s.flop_saving for s in model.acp_stats()) > 0
    err = (got - dense).abs().max() / dense.abs().max()
    assert err < 1e-4, err


def test_float64_model_and_reset():
    model = model_of("fox_pro").double()
    seq = tokens(40, 7)[None]
    with torch.no_grad():
        full = model(seq)
        cache = model.new_cache(1, 40)
        assert cache.layers[0].k.dtype == torch.float64 and cache.layers[0].c.dtype == torch.float32
        feed(model, cache, seq, [7])
        cache.reset()
        assert cache.lengths.tolist() == [0]
        got = feed(model, cache, seq, [1, 39])
    torch.testing.assert_close(got, full, rtol=1e-6, atol=1e-6)


def test_rebase_keeps_the_gate_precise_at_long_length():
    # 40960 steps of log f ~ -2.5: a float32 running sum reaches |c| ~ 1e5, where its step is 0.008.
    # Written through the cache (one token at a time, rebasing every 16 steps, and in prefill chunks),
    # the differences over the last 64 positions stay within float32 steps at |c| ~ 150; the naive ones do not.
    model = model_of("fox")
    gen = torch.Generator().manual_seed(0)
    log_f = -5 * torch.rand(1, 40_960, 4, generator=gen)
    exact = log_f.double().cumsum(1)
    naive = log_f.cumsum(1)
    for chunk in (1, 4096):
        cache = model.new_cache(1, 40_960)
        layer = cache.layers[0]
        kv = torch.zeros(1, chunk, 2, 16)
        for i, start in enumerate(range(0, 40_960, chunk)):
            pos = torch.arange(start, start + chunk)[None]
            layer.write(pos, kv, kv, log_f[:, start : start + chunk], rebase_at=REBASE_AT if chunk > 1 else None)
            cache.lengths.add_(chunk)
            if i % 16 == 15:
                cache.rebase()
        tail = slice(40_960 - 64, 40_960)
        want = exact[:, tail] - exact[:, tail][:, -1:]
        got = layer.c[:, tail].double() - layer.c[:, tail][:, -1:].double()
        assert (got - want).abs().max() < 3e-5, chunk  # float32 steps at |c| <= 144: 1.5e-5
        assert layer.c[:, -1].abs().max() <= REBASE_AT + 16 * 5
    drift = naive[:, tail].double() - naive[:, tail][:, -1:].double()
    assert (drift - want).abs().max() > 1e-3


@pytest.mark.parametrize("chunk", [1, 5])
def test_extreme_gates_keep_c_non_increasing(chunk):
    # Gates far below a float32 step at |c| ~ 100 (-1e-9), between jumps that force rebases (-30, -1e4),
    # and exact zeros: the cached c must never rise, or the ops would reject it as a positive log gate.
    model = model_of("fox")
    gen = torch.Generator().manual_seed(1)
    choices = torch.tensor([-1e-9, 0.0, -0.3, -30.0, -1e4])
    log_f = choices[torch.randint(5, (2, 600, 4), generator=gen, dtype=torch.long)]
    cache = model.new_cache(2, 600)
    layer = cache.layers[0]
    kv = torch.zeros(2, chunk, 2, 16)
    for i, start in enumerate(range(0, 600, chunk)):
        pos = torch.arange(start, start + chunk).expand(2, -1)
        layer.write(pos, kv, kv, log_f[:, start : start + chunk], rebase_at=REBASE_AT if chunk > 1 else None)
        cache.lengths.add_(chunk)
        if i % 3 == 2:
            cache.rebase()
    assert (layer.c[:, 1:] <= layer.c[:, :-1]).all()
    exact = log_f.double().cumsum(1)
    got, want = layer.c[:, -8:].double(), exact[:, -8:]
    got, want = got - got[:, -1:], want - want[:, -1:]
    assert ((got - want).abs() <= 1e-5 + 2e-7 * want.abs()).all()  # float32 steps at |c| up to ~1e4


def test_errors():
    model = model_of("fox")
    cache = model.new_cache(2, 8)
    with pytest.raises(ValueError, match="batch size"):
        model(tokens(3, 0)[None], cache=cache)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.stack([tokens(9, 0)] * 2), cache=cache)
    with pytest.raises(ValueError, match="cu_seqlens"):
        model(torch.stack([tokens(4, 0)] * 2), cache=cache, cu_seqlens=torch.tensor([0, 8], dtype=torch.int32))
    with pytest.raises(ValueError, match="max_len"):
        model.new_cache(1, 0)
    with pytest.raises(ValueError, match="rows"):
        cache.rows(2)


def test_restore_undoes_steps():
    model = model_of("fox_pro")
    seq = tokens(20, 8)[None]
    with torch.no_grad():
        cache = model.new_cache(1, 24)
        model(seq[:, :16], cache=cache)
        saved = cache.snapshot()
        first = feed(model, cache, seq[:, 16:], [1])
        cache.restore(saved)
        assert cache.lengths.tolist() == [16]
        again = feed(model, cache, seq[:, 16:], [1])
    torch.testing.assert_close(again, first, rtol=0, atol=0)


@pytest.mark.parametrize("evict", [False, True])
def test_restore_after_a_rebase_in_between(evict):
    # A forward of several tokens rebases by itself once |c| passes REBASE_AT (the stored c shift by an
    # integer); a restore then must put the running totals in that frame, or every later decay is off by it.
    kw = dict(variant="fox_pro", attn_backend="torch", fgate_bias_init=-1.0, acp=evict)
    torch.manual_seed(0)
    model = FoxLM(tiny(**kw)).eval()
    seq = tokens(80, 9)[None]
    with torch.no_grad():
        full = model(seq)
        cache = model.new_cache(1, 96, **({"evict": True, "pool_fraction": 1.0} if evict else {}))
        if evict:
            cache.freeing = False  # undoing steps needs every block (PagedKVCache.restore)
        t = 0
        while cache.layers[0].c_last.abs().max() < REBASE_AT - 8:  # one token at a time never rebases
            model(seq[:, t : t + 1], cache=cache)
            t += 1
        saved = cache.snapshot()
        model(seq[:, t : t + 8], cache=cache)  # eight (speculated) tokens in one forward: rebases
        assert (cache.layers[0].shifted != 0).any()
        cache.restore(saved)  # rejected
        again = feed(model, cache, seq[:, t : t + 8], [1])
    torch.testing.assert_close(again, full[:, t : t + 8], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("evict", [False, True])
def test_a_step_past_max_len_is_refused(evict):
    # One-token steps too (value checks on, the default): the full cache would index out of range, and the
    # evicting one would write past the L_max its threshold assumes.
    torch.manual_seed(0)
    model = FoxLM(tiny(acp=True)).eval()
    with torch.no_grad():
        cache = model.new_cache(1, 70, **({"evict": True, "pool_fraction": 1.0} if evict else {}))
        model(tokens(70, 3)[None], cache=cache)
        with pytest.raises(ValueError, match="exceed the cache's max_len"):
            model(tokens(1, 4)[None], cache=cache)
    assert cache.lengths.tolist() == [70]


@torch.no_grad()
def test_a_users_one_token_loop_keeps_its_gates_near_their_anchor():
    """model(token, cache=cache) in a plain loop (value checks on, as by default) rebases after each call that
    reads back anyway: without it |c| grew to thousands of nats and the logits drifted 5e-4 off in 1024 tokens
    (experiment 059); generate and CUDA-graph steps rebase at their own checks."""
    from foxacp.ops import set_value_checks

    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, init_std=0.1, attn_backend="torch"
    )
    model = FoxLM(cfg)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.fgate.bias.copy_(torch.tensor([-2.0, -3.0, -4.0, -5.0]))
            block.attn.q_norm.weight.mul_(2.0)
            block.attn.k_norm.weight.mul_(2.0)
    seq = tokens(1024, 5)[None]
    cache = model.eval().new_cache(1, 1024)
    previous = set_value_checks(True)
    try:
        got = torch.cat([model(seq[:, s : s + 1], cache=cache) for s in range(1024)], 1)
    finally:
        set_value_checks(previous)
    assert (got - model(seq)).abs().max().item() < 3e-5
