"""Valid but awkward inputs must give the reference's function, never garbage or an internal assertion:
strided offsets, misaligned buffers, NaN data, and a qk_bound below the truth."""

import pytest
import torch

import foxacp
from foxacp.testing import float64_reference, make_inputs, rel_err, run_fwd_bwd

CU = [0, 1, 150, 203, 331]


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_strided_cu_seqlens_read_as_its_values(backend):
    q, k, v, g = make_inputs(1, CU[-1], CU[-1], 2, 1, 32, seed=1)
    dense = torch.tensor(CU, dtype=torch.int32)
    strided = torch.stack([dense, torch.full_like(dense, 7)], 1).reshape(-1)[::2]  # a view with stride 2
    assert strided.stride(0) == 2 and torch.equal(strided, dense)
    want = foxacp.forgetting_attention(q, k, v, g, cu_seqlens=dense, backend="reference")
    got = foxacp.forgetting_attention(q, k, v, g, cu_seqlens=strided, backend=backend)
    assert rel_err(got, want) < 1e-5


def _misaligned(t: torch.Tensor) -> torch.Tensor:
    """The same values in a buffer that starts 4 bytes past a 16-byte boundary (a slice of a larger one)."""
    out = torch.empty(t.numel() + 1, dtype=t.dtype)[1:].view(t.shape).copy_(t)
    assert out.data_ptr() % 16 and out.is_contiguous()
    return out


def test_misaligned_tensors_and_grad_output():
    inputs = make_inputs(2, 70, 70, 2, 2, 32, seed=2)
    q, k, v, g = (*(_misaligned(t) for t in inputs[:3]), inputs[3])
    go = _misaligned(torch.randn(2, 70, 2, 32))
    o, grads, _ = run_fwd_bwd((q, k, v, g), grad_out=go, backend="triton")
    o_ref, grads_ref = float64_reference((q, k, v, g), go)
    assert max([rel_err(o, o_ref)] + [rel_err(a, b) for a, b in zip(grads, grads_ref, strict=True)]) < 1e-4


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("checks", [True, False])
def test_nan_key_keeps_causality_with_acp(backend, checks):
    """A NaN in key 60 makes rows from 60 on NaN (as in the reference); rows before it stay exact."""
    foxacp.set_value_checks(checks)
    q, k, v, g = make_inputs(1, 130, 130, 2, 2, 32, seed=3, gate_mean=-1.0)
    k[0, 60, 1, 5] = float("nan")
    got = foxacp.forgetting_attention(q, k, v, g, backend=backend)
    want = foxacp.forgetting_attention(q[:, :60], k[:, :60], v[:, :60], g[:, :60], backend="reference")
    assert torch.isfinite(got[:, :60]).all()
    assert rel_err(got[:, :60], want) < 1e-5
    assert torch.isnan(got[:, 60:, 1]).all()


def test_nan_gates_with_value_checks_off_do_not_crash_the_torch_path():
    foxacp.set_value_checks(False)
    q, k, v, g = make_inputs(1, 130, 130, 2, 2, 32, seed=4)
    g[0, 70, 0] = float("nan")
    o = foxacp.forgetting_attention(q, k, v, g, backend="torch")
    assert torch.isfinite(o[:, :70]).all()


def test_check_qk_bound_refuses_a_bound_below_the_data():
    q, k, v, g = make_inputs(1, 130, 130, 2, 2, 32, seed=5, gate_mean=-1.0)
    true_bound = (q.norm(dim=-1).max() * k.norm(dim=-1).max() / 32**0.5).item()
    o = foxacp.forgetting_attention(q, k, v, g, qk_bound=true_bound * 1.01, check_qk_bound=True)
    assert rel_err(o, foxacp.forgetting_attention(q, k, v, g, log_eps=None)) < 1e-4
    with pytest.raises(ValueError, match="qk_bound .* is below"):
        foxacp.forgetting_attention(q, k, v, g, qk_bound=true_bound / 2, check_qk_bound=True)
    with pytest.raises(ValueError, match="query head 1"):
        foxacp.forgetting_attention(q, k, v, g, qk_bound=torch.tensor([1e9, 0.1]), check_qk_bound=True)
    # Unchecked, a bound far too low prunes what matters: the guarantee is the caller's to keep.
    q, k, g = 5 * q, 5 * k, torch.full_like(g, -0.3)  # logits of ~25; tiles 64 tokens, 19 nats apart
    low = foxacp.forgetting_attention(q, k, v, g, qk_bound=0.0)
    assert (low - foxacp.forgetting_attention(q, k, v, g, log_eps=None)).abs().max() > 1e-2


def test_value_checks_stand_aside_while_a_cuda_graph_is_captured(monkeypatch):
    # A host read during stream capture invalidates it (torch.compile "reduce-overhead"); the GPU twin of this
    # check is tests/ops/test_capture_gpu.py.
    from foxacp.ops import validate

    previous = foxacp.set_value_checks(True)
    try:
        assert validate.value_checks_on()
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
        assert not validate.value_checks_on()
    finally:
        foxacp.set_value_checks(previous)
