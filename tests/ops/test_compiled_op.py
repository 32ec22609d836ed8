"""The training op under torch.compile: one opaque custom op forward and backward (``ops.custom_ops``), so a
compiled block is one graph; its results are eager's and the float64 reference's. The Triton kernels run
through the interpreter; the test backend ("aot_eager") runs the traced graphs as they are (no C compiler)."""

import pytest
import torch
from torch._dynamo.utils import counters

import foxacp
from foxacp.model import FoxLM, ModelConfig
from foxacp.ops.config import kernel_config
from foxacp.ops.custom_ops import attention_bwd_op, attention_fwd_op
from foxacp.testing import TOLERANCE, float64_reference, make_inputs, rel_err

# (B, Tq, Tk, Hq, Hkv, D): not multiples of the 64-row tiles, GQA, Tq < Tk, a single query.
SHAPES = [(2, 70, 70, 4, 2, 32), (1, 50, 130, 2, 1, 16), (1, 1, 65, 2, 2, 16)]


def _compiled(fn):
    return torch.compile(fn, backend="aot_eager", fullgraph=True)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("log_eps,bound", [(None, None), (-3.0, None), (-3.0, 2.5), (-3.0, "tensor")])
def test_compiled_op_matches_float64(shape, log_eps, bound):
    """Output and all four gradients of the compiled call against the dense float64 reference, with every kind
    of qk_bound (derived from the data, a float, a per-head tensor)."""
    torch.compiler.reset()
    inputs = make_inputs(*shape, gate_mean=0.0, seed=3)
    qk_bound = torch.full((shape[3],), 3.0) if bound == "tensor" else bound
    kwargs = dict(log_eps=log_eps, qk_bound=qk_bound, backend="triton")
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    o = _compiled(lambda q, k, v, g: foxacp.forgetting_attention(q, k, v, g, **kwargs))(*leaves)
    grad_out = torch.randn_like(o)
    o.backward(grad_out)
    o_ref, grads_ref = float64_reference(inputs, grad_out, **kwargs)
    errs = [rel_err(o, o_ref)] + [rel_err(t.grad, r) for t, r in zip(leaves, grads_ref, strict=True)]
    assert max(errs) < 1e-4, f"rel errors o, dq, dk, dv, dlogf = {errs}"


@pytest.mark.parametrize("acp", [False, True])
def test_compiled_block_is_one_graph_and_matches_eager(acp):
    """A FoX Pro block (QK-norm bound, token shift, output gate) compiled whole: one graph, no break; output,
    input gradient, every parameter's gradient and the ACP statistics equal eager's (the same kernels)."""
    torch.compiler.reset()
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=64, n_layers=1, d_model=64, n_heads=4, n_kv_heads=2, acp=acp, log_eps=-3.0, record_acp_stats=True
    )
    block = FoxLM(cfg).blocks[0]
    # Sharper gates than at init, so that ACP prunes some tiles here.
    torch.nn.init.constant_(block.attn.fgate.bias, -1.0)
    x = torch.randn(2, 150, 64)
    pos = torch.arange(150).expand(2, -1)

    def run(fn):
        block.zero_grad(set_to_none=True)
        leaf = x.clone().requires_grad_()
        y = fn(leaf, pos)
        y.square().sum().backward()
        grads = [p.grad.clone() for p in block.parameters()]
        return y.detach(), leaf.grad, grads, block.attn.last_stats

    counters.clear()
    y, dx, grads, stats = run(_compiled(block.__call__))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    y0, dx0, grads0, stats0 = run(block.__call__)
    torch.testing.assert_close(y, y0, rtol=0, atol=0)
    torch.testing.assert_close(dx, dx0, rtol=0, atol=0)
    for g, g0 in zip(grads, grads0, strict=True):
        torch.testing.assert_close(g, g0, rtol=0, atol=0)
    torch.testing.assert_close(stats.tiles_visited, stats0.tiles_visited)
    torch.testing.assert_close(stats.tiles_causal, stats0.tiles_causal)
    if acp:
        assert int(stats.tiles_visited.sum()) < int(stats.tiles_causal.sum())  # the test prunes something


def _op_args(log_eps, varlen):
    q, k, v, g = make_inputs(1, 75, 75, 2, 1, 16, gate_mean=0.0, seed=5)
    cu = torch.tensor([0, 30, 75], dtype=torch.int32) if varlen else torch.tensor([0, 75], dtype=torch.int32)
    n = 45 if varlen else 75
    return [q, k, v, g, cu, cu, None, 2.0, log_eps, 0.25, n, n, not varlen, kernel_config(q.device, 16).to_ints()]


@pytest.mark.parametrize("log_eps,varlen", [(None, False), (-3.0, True)])
def test_custom_ops_pass_opcheck(log_eps, varlen):
    """torch.library's checks of both ops: schema (no hidden mutation or aliasing), the fake (meta) functions'
    shapes, dtypes and strides against the real outputs, and the autograd registration."""
    args = _op_args(log_eps, varlen)
    for t in args[:4]:
        t.requires_grad_()
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_static")
    torch.library.opcheck(attention_fwd_op, args, test_utils=tests)
    o, *rest = (t.detach() for t in attention_fwd_op(*args))
    saved = [torch.randn_like(o), *(t.detach() for t in args[:4]), o, *rest, args[4], args[5]]
    torch.library.opcheck(attention_bwd_op, [*saved, *args[9:]], test_utils=tests[:1] + tests[2:])


@pytest.mark.gpu
@pytest.mark.parametrize("log_eps", [None, -10.0])
def test_inductor_compiled_op_on_gpu_matches_float64(log_eps):
    """On the GPU, through Inductor (the trainer's compile): bf16 output and gradients against float64, and
    the same values as the eager call (the same kernels on the same inputs)."""
    torch.compiler.reset()
    inputs = [t.cuda() for t in make_inputs(2, 1000, 1000, 4, 2, 64, dtype=torch.bfloat16, seed=7)]
    leaves = [t.clone().requires_grad_() for t in inputs]
    o = torch.compile(lambda *a: foxacp.forgetting_attention(*a, log_eps=log_eps))(*leaves)
    grad_out = torch.randn_like(o)
    o.backward(grad_out)
    o_ref, grads_ref = float64_reference(inputs, grad_out, log_eps=log_eps)
    errs = [rel_err(o, o_ref)] + [rel_err(t.grad, r) for t, r in zip(leaves, grads_ref, strict=True)]
    assert max(errs) < TOLERANCE[torch.bfloat16], errs
    eager = [t.clone().requires_grad_() for t in inputs]
    o_eager = foxacp.forgetting_attention(*eager, log_eps=log_eps)
    o_eager.backward(grad_out)
    torch.testing.assert_close(o, o_eager, rtol=0, atol=0)
    for t, e in zip(leaves, eager, strict=True):
        torch.testing.assert_close(t.grad, e.grad, rtol=0, atol=0)
