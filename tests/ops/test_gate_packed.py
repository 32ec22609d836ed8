"""The cumulative forget gate on packed sequences (foxacp.ops.gate.cumulative_gate, which feeds the
PyTorch/blockwise backend and the boundary search): documents must never see each other.

The float64 reference here is dense attention run on each document alone (tests/ops/float64_reference.py,
independent of foxacp).
"""

from __future__ import annotations

import pytest
import torch

import foxacp
from foxacp.ops import set_value_checks
from foxacp.testing import make_inputs
from tests.ops.float64_reference import dense_f64


@pytest.mark.parametrize("log_eps", [None, -10.0])
def test_torch_backend_nan_gate_in_one_document_does_not_reach_the_next(log_eps):
    """With value checks off (the trainer's setting, and under torch.compile) gates are not checked, and
    acp.plan_tiles documents what a NaN gate does: 'makes c NaN from there on ... rows before it stay causal
    and exact'. Packed documents restart the gate, so a later document must be unaffected. The packed
    ``cumulative_gate`` (gate.py:43-44) takes one cumsum over the whole packed row and subtracts each document's
    starting value, so a NaN in document 0 makes c NaN in every later document too: the torch backend returns
    NaN for all of document 1, whose float64 reference (document 1 alone) is finite. The Triton backend (a scan
    that restarts per document) gives document 1 to 3.5e-7. Tolerance: float32 attention on O(1) values, 1e-5.
    """
    q, k, v, g = make_inputs(1, 100, 100, 2, 2, 16, seed=1)
    g[0, 10, 0] = float("nan")
    cu = torch.tensor([0, 40, 100], dtype=torch.int32)
    want = dense_f64(q[:, 40:], k[:, 40:], v[:, 40:], g[:, 40:])[0]
    assert torch.isfinite(want).all()
    previous = set_value_checks(False)
    try:
        o = foxacp.forgetting_attention(q, k, v, g, cu_seqlens=cu, max_seqlen=60, backend="torch", log_eps=log_eps)
    finally:
        set_value_checks(previous)
    got = o[0, 40:].double()
    assert torch.isfinite(got).all(), (
        f"{int((~torch.isfinite(got)).any(-1).any(-1).sum())} of 60 rows of document 1 are NaN"
    )
    assert (got - want).abs().max().item() < 1e-5


def test_packed_cumulative_gate_of_a_document_does_not_depend_on_the_documents_before_it():
    """Same cause, precision side (low impact): ``cumulative_gate`` on packed sequences returns, for document 1,
    running_total - total_before_document_1, both of the size of everything packed before it. After a document of
    20000 reset tokens (log f = -inf, raised to the floor -1e6: running total -2e10, float64 spacing 3.8e-6),
    document 1's c is off by ~1.6e-5 and its differences D_ij by ~3e-5, where its own float64 cumsum (300 terms
    of |log f| < 10) is exact to ~1e-13. Tolerance 1e-9: far above float64 rounding of the document's own sums,
    far below the error. (End to end the attention of document 1 moves by ~3e-6, still inside float32
    tolerances, hence 'low impact'; the Triton scan restarts per document and is exact.)"""
    from foxacp.ops.gate import cumulative_gate

    gen = torch.Generator().manual_seed(0)
    n0, n1 = 20000, 300
    g = torch.cat(
        [torch.full((n0, 2), -float("inf")), torch.nn.functional.logsigmoid(torch.randn(n1, 2, generator=gen))]
    )
    cu = torch.tensor([0, n0, n0 + n1], dtype=torch.int32)
    c = cumulative_gate(g.float(), cu, False, 2)
    want = g[n0:].float().double().cumsum(0).t()
    assert (c[:, n0:] - want).abs().max().item() < 1e-9


@pytest.mark.parametrize("sm_scale", [1e-320, 1e305])
def test_triton_table_scale_of_an_extreme_sm_scale_falls_back_instead_of_crashing(sm_scale):
    """``triton_gate.table_scale`` promises None (-> the PyTorch path, with a warning) for an sm_scale no fp16
    power of two serves, and validate accepts any positive finite sm_scale. For a denormal sm_scale,
    2048 / (TABLE_LIMIT * sm_scale) overflows to inf and math.ceil(inf) raises OverflowError; for
    sm_scale >= ~6e303, TABLE_LIMIT * sm_scale = inf, the ratio is 0 and math.log2(0) raises ValueError
    ('math domain error'). So forgetting_attention(backend='triton') crashes where backend='torch' runs.
    For 1e-320 the expected output is float64 dense attention with that scale (every score ~0: only the decays
    matter), to float32 tolerance 1e-5; for 1e305 only 'does not crash, gives what the torch path gives'."""
    q, k, v, g = make_inputs(1, 20, 20, 2, 2, 16, seed=2, gate_mean=0.0)
    want = foxacp.forgetting_attention(q, k, v, g, sm_scale=sm_scale, backend="torch", log_eps=None)
    if sm_scale < 1:
        assert (want.double() - dense_f64(q, k, v, g, sm_scale=sm_scale)).abs().max().item() < 1e-5
    with pytest.warns(UserWarning, match="outside the range"):
        got = foxacp.forgetting_attention(q, k, v, g, sm_scale=sm_scale, backend="triton", log_eps=None)
    torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-5, atol=1e-5)
