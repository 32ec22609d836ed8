"""ops/triton_balance.py's combine kernel:

* a row whose first COMBINE_SPLITS splits are all empty for it (its ACP start lies beyond them, while another
  head of its GQA group keeps the whole cache and so spreads the group over many splits): the first combine
  step's maximum is -inf and must weigh 0 (m_safe), not give NaN;
* a group of more rows than one program takes (Tq * group > MAX_ROWS: two row chunks), whose rows past the
  first chunk find their partials at slot r % BLOCK_M of each program.

References: float64 dense softmax written here (exact attention), and the PyTorch twin (ACP)."""

import torch

import foxacp
from foxacp.ops.kvcache import DECODE_BLOCK, check_cache_inputs, logit_bound
from foxacp.ops.triton_balance import COMBINE_SPLITS
from foxacp.ops.triton_decode import MAX_ROWS, decode_attention
from tests.ops.test_kvcache import dense_float64


def test_balanced_combine_of_a_row_whose_first_step_of_splits_is_all_empty():
    B, Tmax, Hq, Hkv, D = 1, 12000, 2, 1, 16  # one GQA group of two heads
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(B, 1, Hq, D, generator=gen)
    k, v = (torch.randn(B, Tmax, Hkv, D, generator=gen) for _ in range(2))
    rates = torch.tensor([0.0, 1.0])  # head 0 keeps every block, head 1 only the last few
    c = (-rates * torch.rand(B, Tmax, Hq, generator=gen)).double().cumsum(1).float()
    lens = torch.tensor([Tmax], dtype=torch.int32)
    log_eps, qk_bound, splits = -10.0, 1.0, 40  # 40 programs for the one group
    problem = check_cache_inputs(q, k, v, c, lens, None, log_eps, "triton")
    u = logit_bound(q, k, lens, problem, qk_bound)
    acp = (u, log_eps)
    # Head 1 keeps fewer blocks than the last (n - COMBINE_SPLITS) splits cover: its first step is all empty.
    blocks = -(-Tmax // DECODE_BLOCK)
    per_split = -(-blocks // splits)
    assert splits > COMBINE_SPLITS and blocks - COMBINE_SPLITS * per_split > 3
    o = decode_attention(q, k, v, c, lens, acp, problem, DECODE_BLOCK, splits, schedule="balanced")
    twin = foxacp.forgetting_attention_with_kvcache(
        q, k, v, c, lens, log_eps=log_eps, qk_bound=qk_bound, backend="torch"
    )
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o, twin, atol=1e-5, rtol=1e-5)


def test_balanced_schedule_with_two_row_chunks_per_group():
    B, Tq, Tmax, Hq, Hkv, D = 1, 40, 640, 4, 2, 16  # 40 queries x 2 heads = 80 rows per group > MAX_ROWS
    assert Tq * (Hq // Hkv) > MAX_ROWS
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(B, Tq, Hq, D, generator=gen)
    k, v = (torch.randn(B, Tmax, Hkv, D, generator=gen) for _ in range(2))
    c = (-0.01 * torch.rand(B, Tmax, Hq, generator=gen)).double().cumsum(1).float()
    lens = torch.tensor([Tmax], dtype=torch.int32)
    problem = check_cache_inputs(q, k, v, c, lens, None, None, "triton")
    o = decode_attention(q, k, v, c, lens, None, problem, DECODE_BLOCK, 4, schedule="balanced")
    torch.testing.assert_close(o.double(), dense_float64(q, k, v, c, lens), atol=1e-5, rtol=1e-5)


def test_balanced_combine_merges_the_split_past_a_whole_number_of_steps():
    """A group of exactly COMBINE_SPLITS + 1 splits: the combine's second step holds one split, the last one,
    which here holds the row's own key and its largest logit."""
    n = COMBINE_SPLITS + 1
    per_split = 5
    Tmax = n * per_split * DECODE_BLOCK  # n splits of per_split blocks, the last one full
    B, H, D = 1, 1, 16
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(B, 1, H, D, generator=gen)
    k = torch.randn(B, Tmax, H, D, generator=gen) * 0.5
    v = torch.randn(B, Tmax, H, D, generator=gen)
    k[0, Tmax - 5, 0] = q[0, 0, 0] * 3.0
    c = torch.zeros(B, Tmax, H)
    lens = torch.tensor([Tmax], dtype=torch.int32)
    problem = check_cache_inputs(q, k, v, c, lens, None, None, "triton")
    o = decode_attention(q, k, v, c, lens, None, problem, DECODE_BLOCK, n, schedule="balanced")
    torch.testing.assert_close(o.double(), dense_float64(q, k, v, c, lens), atol=1e-5, rtol=1e-5)
