"""The fused combine (the last split program of a group merges the group's partials, counted by an atomic), in the
even and the balanced schedule: equal to the combine kernel and to a float64 dense computation, with the counts
back at zero after every call, so that the next call (a CUDA graph's replay) starts clean. GPU checks:
tests/ops/test_decode_gpu.py."""

import math

import pytest
import torch

from foxacp.ops import triton_decode
from foxacp.ops.kvcache import DECODE_BLOCK, check_cache_inputs, logit_bound
from foxacp.ops.triton_decode import decode_attention, group_counters, use_schedule
from tests.ops.test_kvcache import dense_float64, make_cache

CPU = torch.device("cpu")


def run(q, k, v, c, lens, log_eps, combine, splits=None, schedule="even"):
    problem = check_cache_inputs(q, k, v, c, lens, None, log_eps, "triton")
    acp = None if log_eps is None else (logit_bound(q, k, lens, problem, None), log_eps)
    return decode_attention(q, k, v, c, lens, acp, problem, DECODE_BLOCK, splits, schedule=schedule, combine=combine)


@pytest.mark.parametrize("schedule", ["even", "balanced"])
@pytest.mark.parametrize(
    "B,Tq,Hq,Hkv,lens,log_eps,splits",
    [
        (1, 1, 3, 3, [200], None, None),  # B=1, no GQA: one row per group
        (3, 1, 4, 2, [200, 67, 1], None, 3),  # ragged, a one-token sequence, GQA
        (2, 5, 4, 1, [131, 90], -6.0, 4),  # Tq > 1, ACP: splits before the start merge as empty
        (2, 9, 8, 1, [150, 149], None, 2),  # 72 rows: two row chunks per group, each counted apart
        (1, 1, 2, 2, [257], None, 7),  # splits not a power of two (padded in the merge)
    ],
)
def test_fused_combine_equals_the_combine_kernel_and_float64(B, Tq, Hq, Hkv, lens, log_eps, splits, schedule):
    D = 16
    q, k, v, c, lens_t, _ = make_cache(B, Tq, 260, Hq, Hkv, D, lens, gate_mean=1.0, seed=B * 7 + Tq)
    fused = run(q, k, v, c, lens_t, log_eps, "fused", splits, schedule)
    kernel = run(q, k, v, c, lens_t, log_eps, "kernel", splits, schedule)
    torch.testing.assert_close(fused, kernel, atol=2e-6, rtol=2e-6)
    assert int(group_counters(CPU, 1).abs().sum()) == 0  # every count used was zeroed again
    if log_eps is None:  # exact: against the float64 dense result
        ref = dense_float64(q.double(), k.double(), v.double(), c.double(), lens_t, 1 / math.sqrt(D))
        torch.testing.assert_close(fused.double(), ref, atol=2e-5, rtol=2e-5)
    again = run(q, k, v, c, lens_t, log_eps, "fused", splits, schedule)  # the counts start from zero again
    torch.testing.assert_close(again, fused, atol=0, rtol=0)


def test_fused_combine_in_fp16_with_extreme_gates():
    q, k, v, c, lens, _ = make_cache(2, 1, 300, 4, 2, 32, [300, 129], dtype=torch.float16, gate_mean=-4.0, seed=3)
    fused = run(q, k, v, c, lens, None, "fused", 5)
    kernel = run(q, k, v, c, lens, None, "kernel", 5)
    assert fused.dtype == torch.float16 and bool(torch.isfinite(fused).all())
    torch.testing.assert_close(fused, kernel, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("schedule", ["even", "balanced"])
def test_a_nonzero_count_left_behind_would_show(schedule):
    """The tests above can fail: a count not zeroed by the last call makes the next call's merge run early (or
    never), and its output differs from the combine kernel's."""
    q, k, v, c, lens, _ = make_cache(1, 1, 257, 2, 2, 16, [257], seed=5)
    good = run(q, k, v, c, lens, None, "kernel", 4, schedule)
    counts = group_counters(CPU, 2)
    counts[:2] = 1  # as if one split of each group had already counted
    try:
        bad = run(q, k, v, c, lens, None, "fused", 4, schedule)
    finally:
        counts.zero_()
    assert not torch.allclose(bad, good)


def test_combine_setting():
    assert triton_decode.COMBINE in triton_decode.COMBINES
    with use_schedule("even", "fused"):
        assert triton_decode.COMBINE == "fused" and triton_decode.SCHEDULE == "even"
    assert triton_decode.COMBINE == "kernel"
    with pytest.raises(ValueError, match="decode combine"):
        triton_decode.check_combine("atomic")
