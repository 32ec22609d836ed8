"""The Triton gate scan and its gradient (``triton_gate``) against the torch cumulative sum and its autograd.

The key table the scan also writes is checked in test_tables.py."""

import pytest
import torch

from foxacp.ops.gate import cumulative_gate
from foxacp.ops.validate import check_inputs
from foxacp.testing import make_inputs

CASES = {  # name: (B, Tq, Tk, cu_seqlens); lengths not multiples of the 1024-row chunk
    "batch": (2, 1500, 1500, None),
    "fewer-queries": (2, 700, 2100, None),
    "packed": (1, 2500, 2500, [0, 1, 1030, 1100, 2500]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gate_scan_and_gradient_match_torch(case):
    from foxacp.ops.triton_gate import gate_grad, gate_scan

    B, Tq, Tk, cu = CASES[case]
    q, k, v, g = make_inputs(B, Tq, Tk, 3, 3, 16, gate_mean=-1.0, gate_spread=4.0)
    cu = None if cu is None else torch.tensor(cu, dtype=torch.int32)
    problem = check_inputs(q, k, v, g, None, cu, None, None, "triton")
    g.view(-1, 3)[::97, 1] = -float("inf")  # resets: raised to the floor, gradient 0
    gp = g.reshape(-1, 3).double().requires_grad_()
    want = cumulative_gate(gp, problem.cu_k, problem.uniform, problem.num_seqs)

    got, _ = gate_scan(g.reshape(-1, 3), problem, 64, 1.0)
    assert got.dtype == torch.float64 and got.shape == want.shape
    assert torch.allclose(got, want.detach(), rtol=1e-12, atol=1e-9)

    # dL/dc = dcq at the queries' key positions (queries sit at the end of each sequence's keys) - dck
    dcq, dck = torch.randn(3, B * Tq), torch.randn(3, B * Tk)
    dc = -dck.double()
    if cu is None:
        dc.view(3, B, Tk)[:, :, Tk - Tq :] += dcq.double().view(3, B, Tq)
    else:
        dc += dcq.double()
    (want_grad,) = torch.autograd.grad(want, gp, dc)
    got_grad = gate_grad(dcq, dck, g.reshape(-1, 3), problem)
    assert got_grad.dtype == torch.float32 and got_grad.shape == gp.shape
    assert torch.allclose(got_grad.double(), want_grad, rtol=1e-6, atol=1e-3)
    assert (got_grad.view(-1, 3)[::97, 1] == 0).all()
    assert want_grad.abs().max() > 50  # long sums: the carry across chunks is exercised


def test_gate_scan_strided_input():
    """A gate tensor whose heads are not adjacent in memory (a transposed view) scans the same."""
    from foxacp.ops.triton_gate import gate_scan

    q, k, v, g = make_inputs(1, 300, 300, 2, 2, 16)
    problem = check_inputs(q, k, v, g, None, None, None, None, "triton")
    strided = g.reshape(-1, 2).t().contiguous().t()
    assert strided.stride() != (2, 1)
    want = cumulative_gate(strided, problem.cu_k, problem.uniform, problem.num_seqs)
    assert torch.allclose(gate_scan(strided, problem, 64, 1.0)[0], want, rtol=1e-12, atol=1e-9)
