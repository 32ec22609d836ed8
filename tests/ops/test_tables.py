"""The score tables KC (``triton_gate.gate_scan``) and QC (``triton_op._qc_table``) against a float64 twin
written with torch ops."""

import math

import pytest
import torch

from foxacp.ops.gate import cumulative_gate, sequence_ids
from foxacp.ops.validate import check_inputs
from foxacp.testing import make_inputs


def _positions(cu: torch.Tensor, total: int) -> torch.Tensor:
    return torch.arange(total) - cu.long()[sequence_ids(cu, total)]


def _twin(c_t, lse, problem, block, scale) -> torch.Tensor:
    """(Hq, total) float64: the value each table row encodes, over the table scale (``triton_kernels.table_rows``)."""
    if lse is None:  # each key's decay up to the last key of its block in the sequence
        total = c_t.shape[1]
        pos = _positions(problem.cu_k, total)
        seq = sequence_ids(problem.cu_k, total)
        last = torch.minimum(torch.arange(total) - pos % block + block, problem.cu_k.long()[seq + 1]) - 1
        x = c_t[:, last] - c_t
    else:
        total = lse.shape[1]
        pos = _positions(problem.cu_q, total)
        seq = sequence_ids(problem.cu_q, total)
        k_len, q_len = problem.cu_k.diff().long(), problem.cu_q.diff().long()
        key = problem.cu_k.long()[seq] + (k_len - q_len)[seq] + pos
        c_q = c_t[:, key]
        x = (c_q - c_q[:, torch.arange(total) - pos % block]) - lse.double() / math.log2(math.e)
    return (x / (problem.sm_scale * scale)).clamp(-3e4, 3e4)


@pytest.mark.parametrize("block", [32, 64])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("query", [False, True])
@pytest.mark.parametrize("scale", [1.0, 2.0**-3])
def test_tables_match_float64_twin(block, packed, query, scale):
    from foxacp.ops import triton_op
    from foxacp.ops.triton_gate import gate_scan

    B, Tq, Tk = (1, 331, 331) if packed else (2, 70, 200)
    q, k, v, g = make_inputs(B, Tq, Tk, 3, 1, 32, gate_mean=-1.0, gate_spread=4.0)
    cu = torch.tensor([0, 1, 150, 203, 331], dtype=torch.int32) if packed else None
    problem = check_inputs(q, k, v, g, None, cu, None, None, "triton")
    c_t = cumulative_gate(g.reshape(-1, 3), problem.cu_k, problem.uniform, problem.num_seqs)
    lse = 40 * torch.randn(3, B * Tq) if query else None  # any finite float32 row values
    if query:
        tab = triton_op._qc_table(c_t, lse, problem, block, scale)
    else:
        c_scan, tab = gate_scan(g.reshape(-1, 3), problem, block, scale)
        assert torch.allclose(c_scan, c_t, rtol=1e-12, atol=1e-9)

    assert tab.shape == (c_t.shape[1] if lse is None else B * Tq, 3, 16) and tab.dtype == torch.float16
    parts, other = (tab[..., 3:6], tab[..., :3]) if query else (tab[..., :3], tab[..., 3:6])
    assert (other == scale).all()
    assert not tab[..., 6:].any()
    want = _twin(c_t, lse, problem, block, scale).t()
    got = parts.double().sum(-1)
    assert torch.allclose(got, want, rtol=2**-22, atol=1e-6), (got - want).abs().max()
    assert want.abs().max() > 100  # strong gates: the split into three parts is exercised
    if not query:
        assert (want <= 0).all()  # every KC part is <= 0: saturation only ever shortens a decay


def test_table_scale_is_a_power_of_two_that_keeps_saturation_harmless():
    from foxacp.ops.triton_gate import table_scale

    for sm_scale in (1e-5, 1e-4, 0.125, 1.0, 1e3):
        s = table_scale(sm_scale)
        assert math.log2(s) == round(math.log2(s))
        assert 3e4 * s * sm_scale >= 2048  # a saturated table value still means >= 2048 nats of decay
        assert 3e4 * s * sm_scale < 4 * 2048  # and no coarser than needed
    assert table_scale(1e-9) is None and table_scale(1e9) is None
