"""Split-KV decode, balanced schedule: a row whose group gets more splits than one combine step merges
(triton_balance.COMBINE_SPLITS) is merged over several steps. When a LATER step holds the row's largest score,
the running sum and output of the earlier steps must be rescaled by 2^(m_old - m_new).

The shipped test (test_triton_balanced_schedule_gives_the_long_group_many_splits) has random keys, so the
largest of 38 split maxima almost always lies among the first 32 (the first step) and that rescale is 1: the
mutant "alpha = 1" survives it. Here the largest logit sits in the cache's last block, in the last split.
Checked against a float64 dense softmax written here (no foxacp code in the reference).
"""

import torch

from foxacp.ops.kvcache import DECODE_BLOCK, check_cache_inputs
from foxacp.ops.triton_balance import COMBINE_SPLITS
from foxacp.ops.triton_decode import decode_attention
from tests.ops.test_kvcache import dense_float64


def test_balanced_combine_rescales_earlier_steps_when_a_later_split_holds_the_max():
    B, Tmax, H, D = 2, 12000, 1, 16
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, 1, H, D, generator=gen)
    k = torch.randn(B, Tmax, H, D, generator=gen) * 0.5
    v = torch.randn(B, Tmax, H, D, generator=gen)
    k[0, Tmax - 5, 0] = q[0, 0, 0] * 3.0  # logit ~ 3 |q|^2 / 4 ~ 12, the row's max, in its last block
    c = torch.zeros(B, Tmax, H)  # no forgetting: every block is kept
    lens = torch.tensor([Tmax, DECODE_BLOCK], dtype=torch.int32)  # one long group, one of a single block
    problem = check_cache_inputs(q, k, v, c, lens, None, None, "triton")
    splits = 20  # x 2 groups = 40 programs; the balanced share gives the long group ~38 > COMBINE_SPLITS
    assert 2 * splits > COMBINE_SPLITS + 2
    o = decode_attention(q, k, v, c, lens, None, problem, DECODE_BLOCK, splits, schedule="balanced")
    ref = dense_float64(q, k, v, c, lens)
    torch.testing.assert_close(o.double(), ref, atol=1e-5, rtol=1e-5)
