"""ops/paged.py's value checks (check_paged_inputs / _check_values): a negative
block_start, a start past the FIRST query's block when Tq > 1, a resident block mapped to a negative pool
index, a cache_seqlens below Tq, a zero per-head qk_bound tensor (a valid bound), and table entries past a
length that ends on a block boundary (not resident: never read, so anything may be there)."""

import pytest
import torch

from foxacp.ops.paged import forgetting_attention_with_paged_kvcache
from tests.ops.test_kvcache import dense_float64, make_cache
from tests.ops.test_paged import BLK, paginate


def _setup(Tq=1, lens=(130, 65), starts=((0, 0), (0, 0)), Tmax=130):
    q, k, v, c, lens_t, _ = make_cache(2, Tq, Tmax, 4, 2, 16, list(lens))
    kp, vp, cp, table, start = paginate(k, v, c, lens_t, [list(s) for s in starts])
    return (q, k, v, c, lens_t), [q, kp, vp, cp, table, start, lens_t]


def _call(args, **kw):
    return forgetting_attention_with_paged_kvcache(*args, **{"qk_bound": 1.0, "backend": "torch", **kw})


def test_a_negative_block_start_is_refused():
    _, args = _setup()
    args[5] = torch.tensor([[-1, 0], [0, 0]], dtype=torch.int32)
    with pytest.raises(ValueError, match="block_start"):
        _call(args)


def test_a_start_past_the_first_querys_block_is_refused_with_several_queries():
    """Tq = 3 queries at positions 126, 127, 128 of a 129-key row: the first query's block is 1, the last's 2.
    A start of 2 would drop keys the first query needs."""
    _, args = _setup(Tq=3, lens=(129, 65))
    assert (129 - 3) // BLK == 1 and (129 - 1) // BLK == 2
    args[5] = torch.tensor([[2, 0], [0, 0]], dtype=torch.int32)
    with pytest.raises(ValueError, match="block_start"):
        _call(args)


def test_a_resident_block_mapped_to_a_negative_index_is_refused():
    _, args = _setup()
    table = args[4].clone()
    table[0, 0, 1] = -1
    args[4] = table
    with pytest.raises(ValueError, match="outside the pool"):
        _call(args)


def test_a_length_below_tq_is_refused():
    _, args = _setup(Tq=2, lens=(130, 65))
    args[6] = torch.tensor([130, 1], dtype=torch.int32)
    with pytest.raises(ValueError, match="cache_seqlens must lie"):
        _call(args)


def test_a_zero_bound_tensor_is_a_valid_bound():
    (q, k, v, c, lens), args = _setup()
    out = _call(args, qk_bound=torch.zeros(4), log_eps=None)
    torch.testing.assert_close(out.double(), dense_float64(q, k, v, c, lens), atol=1e-5, rtol=1e-5)


def test_table_entries_past_a_block_aligned_length_are_not_checked():
    """Row 0 holds 128 keys (blocks 0, 1) in a 3-block table: block 2 holds none of its keys, so its entry is
    never read and may point anywhere (as for evicted blocks)."""
    (q, k, v, c, lens), args = _setup(lens=(128, 65), Tmax=130)
    assert args[4].shape[2] == 3
    table = args[4].clone()
    table[0, :, 2] = 10_000
    args[4] = table
    out = _call(args, log_eps=None)
    torch.testing.assert_close(out.double(), dense_float64(q, k, v, c, lens), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_the_threshold_uses_the_callers_max_seqlen(backend):
    """delta = -2U - log(max_seqlen) + log_eps with the max_seqlen given, not the table's capacity: here they
    differ by a factor 10^4 (9.2 nats of delta), which moves the first kept block of the heads. Large logits and
    a false bound of 0 (as test_kvcache does) give the blocks between the two thresholds visible weight."""
    from tests.ops.test_kvcache import acp_first_key
    from tests.ops.test_paged import threshold

    B, Tq, Tmax, Hq, Hkv, D = 2, 1, 300, 4, 2, 32
    q, k, v, c, lens, _ = make_cache(B, Tq, Tmax, Hq, Hkv, D, [300, 129], gate_mean=-1.0)
    q = q * 4
    starts = [[0, 0], [0, 0]]
    kp, vp, cp, table, start = paginate(k, v, c, lens, starts)
    capacity = table.shape[2] * BLK
    u, log_eps, max_len = 0.0, -3.0, 10_000 * capacity
    out = forgetting_attention_with_paged_kvcache(
        q, kp, vp, cp, table, start, lens, qk_bound=u, max_seqlen=max_len, log_eps=log_eps, backend=backend
    )

    def ref(L):
        first = acp_first_key(c, lens, Tq, threshold(u, Hq, L, log_eps)[None].expand(B, Hq))
        return dense_float64(q, k, v, c, lens, first_key=first)

    expected, at_capacity = ref(max_len), ref(capacity)
    assert (expected - at_capacity).abs().max() > 2e-4  # the two thresholds prune differently here (> 6 x atol)
    torch.testing.assert_close(out.double(), expected, atol=3e-5, rtol=1e-5)
