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


def _twin(c_t, lse, problem, block) -> torch.Tensor:
    """(Hq, total) float64: the value each table row encodes (see ``triton_kernels.table_rows``)."""
    if lse is None:
        pos = _positions(problem.cu_k, c_t.shape[1])
        first = torch.arange(c_t.shape[1]) - pos % block
        x = c_t[:, first] - c_t
    else:
        total = lse.shape[1]
        pos = _positions(problem.cu_q, total)
        seq = sequence_ids(problem.cu_q, total)
        k_len, q_len = problem.cu_k.diff().long(), problem.cu_q.diff().long()
        key = problem.cu_k.long()[seq] + (k_len - q_len)[seq] + pos
        c_q = c_t[:, key]
        x = (c_q - c_q[:, torch.arange(total) - pos % block]) - lse.double() / math.log2(math.e)
    return (x / problem.sm_scale).clamp(-3e4, 3e4)


@pytest.mark.parametrize("block", [32, 64])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("query", [False, True])
def test_tables_match_float64_twin(block, packed, query):
    from foxacp.ops import triton_op
    from foxacp.ops.triton_gate import gate_scan

    B, Tq, Tk = (1, 331, 331) if packed else (2, 70, 200)
    q, k, v, g = make_inputs(B, Tq, Tk, 3, 1, 32, gate_mean=-1.0, gate_spread=4.0)
    cu = torch.tensor([0, 1, 150, 203, 331], dtype=torch.int32) if packed else None
    problem = check_inputs(q, k, v, g, None, cu, None, None, "triton")
    c_t = cumulative_gate(g.reshape(-1, 3), problem.cu_k, problem.uniform, problem.num_seqs)
    lse = 40 * torch.randn(3, B * Tq) if query else None  # any finite float32 row values
    if query:
        tab = triton_op._qc_table(c_t, lse, problem, block)
    else:
        c_scan, tab = gate_scan(g.reshape(-1, 3), problem, block)
        assert torch.allclose(c_scan, c_t, rtol=1e-12, atol=1e-9)

    assert tab.shape == (c_t.shape[1] if lse is None else B * Tq, 3, 16) and tab.dtype == torch.float16
    parts, other = (tab[..., 3:6], tab[..., :3]) if query else (tab[..., :3], tab[..., 3:6])
    assert (other == 1).all()
    assert not tab[..., 6:].any()
    want = _twin(c_t, lse, problem, block).t()
    got = parts.double().sum(-1)
    assert torch.allclose(got, want, rtol=2**-22, atol=1e-6), (got - want).abs().max()
    assert want.abs().max() > 100  # strong gates: the split into three parts is exercised
