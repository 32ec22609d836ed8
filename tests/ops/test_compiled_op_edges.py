"""The training op under torch.compile beyond one plain call: a kernel config chosen for the forward only, new
sequence lengths, activation checkpointing around the op, packed batches; and a double backward, which the
kernels cannot give, raises instead of dropping the second-order terms."""

import pytest
import torch
from torch._dynamo.utils import counters
from torch.utils.checkpoint import checkpoint

import foxacp
from foxacp.ops import validate
from foxacp.ops.config import Blocks, KernelConfig, kernel_config, use_kernel_config
from foxacp.testing import float64_reference, make_inputs, rel_err


def _attention(**kw):
    return lambda q, k, v, g, cu=None, longest=None: foxacp.forgetting_attention(
        q, k, v, g, cu_seqlens=cu, max_seqlen=longest, backend="triton", **kw
    )


def _fresh():
    torch.compiler.reset()
    counters.clear()


def _breaks() -> dict:
    return {k.split("\n")[0]: v for k, v in counters["graph_break"].items()}


def test_kernel_config_round_trips_through_ints():
    for cfg in (kernel_config(torch.device("cpu"), 64), KernelConfig(128, 64, *[Blocks(64, 64, 8, 3, 4, 96, 16)] * 3)):
        assert KernelConfig.from_ints(tuple(cfg.to_ints())) == cfg


@pytest.mark.parametrize("log_eps", [None, -3.0])
def test_backward_uses_the_forward_kernel_config(log_eps):
    """Forward inside ``use_kernel_config``, backward after it: the compiled backward (like eager's) runs with the
    forward's tiles and tables, not with the config in force when it runs (it did: dq 56-62% off)."""
    inputs = make_inputs(1, 200, 200, 2, 1, 16, gate_mean=0.0, seed=2)
    grad_out = torch.randn(1, 200, 2, 16, generator=torch.Generator().manual_seed(0))
    o_ref, grads_ref = float64_reference(inputs, grad_out, backend="triton", log_eps=log_eps)
    cfg = KernelConfig(128, 128, *[Blocks(128, 128, head_group=3)] * 3)
    _fresh()
    f = torch.compile(_attention(log_eps=log_eps), backend="aot_eager", fullgraph=True)
    leaves = [t.clone().requires_grad_() for t in inputs]
    with use_kernel_config(cfg):
        o = f(*leaves)
    o.backward(grad_out)
    errs = [rel_err(o, o_ref)] + [rel_err(t.grad, r) for t, r in zip(leaves, grads_ref, strict=True)]
    assert max(errs) < 1e-4, errs


def test_new_sequence_lengths_do_not_recompile_with_dynamic_shapes():
    _fresh()
    f = torch.compile(_attention(log_eps=-3.0), backend="aot_eager", dynamic=True)
    for T in (70, 100, 129):
        f(*make_inputs(1, T, T, 2, 1, 16, gate_mean=0.0, seed=T))
    assert counters["stats"]["unique_graphs"] == 1


def test_op_inside_activation_checkpointing_compiles_without_breaks():
    """Traced under a checkpoint a call may have no side effects: the eager path's cache of uniform offsets was
    one (its write), and Dynamo then ran the whole checkpointed call eagerly, at every call."""
    validate._OFFSETS.clear()  # this (batch, length) not cached by an eager call before
    _fresh()
    inputs = make_inputs(1, 70, 70, 2, 1, 16, gate_mean=0.0, seed=1)
    grad_out = torch.randn(1, 70, 2, 16, generator=torch.Generator().manual_seed(0))
    _, grads_ref = float64_reference(inputs, grad_out, backend="triton", log_eps=-3.0)
    attend = _attention(log_eps=-3.0)
    f = torch.compile(lambda *a: checkpoint(attend, *a, use_reentrant=False), backend="aot_eager")
    leaves = [t.clone().requires_grad_() for t in inputs]
    f(*leaves).backward(grad_out)
    assert counters["stats"]["unique_graphs"] >= 1 and not _breaks(), _breaks()
    for t, r in zip(leaves, grads_ref, strict=True):
        assert rel_err(t.grad, r) < 1e-4


def test_packed_call_with_max_seqlen_is_one_graph():
    """With max_seqlen given and value checks off (as under compile), cu_seqlens is not read back to the host."""
    _fresh()
    cu = torch.tensor([0, 1, 70, 71, 150], dtype=torch.int32)
    f = torch.compile(lambda q, k, v, g, cu: _attention()(q, k, v, g, cu, 79), backend="aot_eager", fullgraph=True)
    inputs = make_inputs(1, 150, 150, 2, 1, 16, gate_mean=0.0, seed=1)
    torch.testing.assert_close(f(*inputs, cu), _attention()(*inputs, cu, 79), rtol=0, atol=0)


def test_eager_values_of_cu_seqlens_are_checked_only_with_value_checks_or_without_max_seqlen():
    inputs = make_inputs(1, 150, 150, 2, 1, 16, gate_mean=0.0, seed=1)
    bad = torch.tensor([0, 100, 90, 150], dtype=torch.int32)
    with pytest.raises(ValueError, match="strictly increasing"):
        _attention()(*inputs, bad, 100)
    previous = foxacp.ops.set_value_checks(False)
    try:
        with pytest.raises(ValueError, match="strictly increasing"):  # needed to find max_seqlen: still read
            _attention()(*inputs, bad)
    finally:
        foxacp.ops.set_value_checks(previous)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_double_backward_raises_or_is_right(backend):
    """A gradient penalty through the op: the kernels' backward records no graph, so it must raise, never drop
    the second-order term (the Triton path did: dk 100% off)."""
    inputs = make_inputs(1, 40, 40, 2, 1, 16, gate_mean=0.0, seed=3)

    def k_grad(backend):
        q, k, v, g = (t.double() if backend == "reference" and i < 3 else t for i, t in enumerate(inputs))
        leaves = [t.clone().requires_grad_() for t in (q, k, v, g)]
        o = foxacp.forgetting_attention(*leaves, backend=backend, log_eps=None)
        (dq,) = torch.autograd.grad(o.square().sum(), leaves[0], create_graph=True)
        (o.sum() + dq.square().sum()).backward()
        return leaves[1].grad

    try:
        got = k_grad(backend)
    except RuntimeError as e:
        assert "differentiable" in str(e) or "double backward" in str(e)
        return
    assert rel_err(got, k_grad("reference")) < 1e-4
