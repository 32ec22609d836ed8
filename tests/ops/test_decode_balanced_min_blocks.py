"""ops/triton_balance.py: the balanced schedule hands out extra splits only as far as
each gets MIN_BLOCKS_PER_SPLIT blocks of the total kept (``extra = min(PROGRAMS - groups, total // MIN)``).
Without that cap the output is the same but every group is cut into as many splits as there are programs,
each writing partials and a combine. Observed here through the partials buffers (pre-filled with NaN by a
wrapper around ``triton_balance.partials``): the programs that wrote partials are at most
groups + total_kept // MIN_BLOCKS_PER_SPLIT; and the output matches a float64 dense softmax written here."""

import math

import pytest
import torch

from foxacp.ops import triton_balance
from foxacp.ops.kvcache import DECODE_BLOCK, check_cache_inputs
from foxacp.ops.triton_decode import MIN_BLOCKS_PER_SPLIT, decode_attention
from tests.ops.test_kvcache import dense_float64


@pytest.mark.parametrize("Tmax", [3 * DECODE_BLOCK, 10 * DECODE_BLOCK])
def test_balanced_extra_splits_are_capped_by_min_blocks(monkeypatch, Tmax):
    B, H, D, splits = 1, 2, 16, 8  # 2 groups (one row each) x 8 = 16 programs
    gen = torch.Generator().manual_seed(Tmax)
    q = torch.randn(B, 1, H, D, generator=gen)
    k = torch.randn(B, Tmax, H, D, generator=gen)
    v = torch.randn(B, Tmax, H, D, generator=gen)
    c = torch.zeros(B, Tmax, H)  # no forgetting, exact attention: every group keeps all its blocks
    lens = torch.tensor([Tmax], dtype=torch.int32)
    captured = []
    real_partials = triton_balance.partials

    def nan_partials(programs, block_m, head_dim, device):
        ml, acc = real_partials(programs, block_m, head_dim, device)
        ml.fill_(math.nan)
        captured.append((ml, block_m, programs))
        return ml, acc

    monkeypatch.setattr(triton_balance, "partials", nan_partials)
    problem = check_cache_inputs(q, k, v, c, lens, None, None, "triton")
    o = decode_attention(q, k, v, c, lens, None, problem, DECODE_BLOCK, splits, schedule="balanced")
    torch.testing.assert_close(o.double(), dense_float64(q, k, v, c, lens), atol=1e-5, rtol=1e-5)
    assert len(captured) == 1, "the balanced schedule ran"
    ml, block_m, programs = captured[0]
    assert programs == 2 * splits
    written = int((~torch.isnan(ml.view(programs, block_m * 2))).any(dim=1).sum())
    groups, total_kept = 2, 2 * (Tmax // DECODE_BLOCK)
    assert written <= groups + total_kept // MIN_BLOCKS_PER_SPLIT, (written, total_kept)
