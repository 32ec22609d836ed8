"""ops/custom_ops.py's training op: under torch.compile the caller's qk_bound (a float or
a per-head tensor) must reach the ACP plan, and the backward op must skip the same tiles as the forward (the
plan's kv_lo / q_hi), exactly as the eager call does. The existing tests pass true bounds, where the skipped
tiles weigh nothing visible in float32 (a backward that visits every tile, or a bound derived from the data,
gives the same bits); here the bound is deliberately tight (0, as test_kvcache does for decode), so it
visibly decides which tiles are skipped, forward and backward."""

import pytest
import torch

import foxacp
from foxacp.testing import make_inputs


@pytest.mark.parametrize("kind", ["float", "tensor"])
def test_compiled_call_uses_the_given_qk_bound_forward_and_backward(kind):
    torch.compiler.reset()
    q, k, v, g = make_inputs(1, 200, 200, 2, 1, 16, gate_mean=0.0, seed=4)
    q = q * 4
    bound = 0.0 if kind == "float" else torch.zeros(2)
    kw = dict(log_eps=-3.0, backend="triton", return_stats=True)

    def attend(q, k, v, g):
        return foxacp.forgetting_attention(q, k, v, g, qk_bound=bound, **kw)

    def run(fn):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, g)]
        o, st = fn(*leaves)
        o.backward(torch.ones_like(o))
        return o.detach(), st, [t.grad for t in leaves]

    o_eager, st_eager, grads_eager = run(attend)
    o_data, st_data = foxacp.forgetting_attention(q, k, v, g, qk_bound=None, **kw)
    dense, _ = foxacp.forgetting_attention(q, k, v, g, qk_bound=bound, **(kw | dict(log_eps=None)))
    # The test is sensitive: the given bound prunes other tiles than the data's bound, with visible weight.
    assert int(st_eager.tiles_visited.sum()) < int(st_data.tiles_visited.sum())
    assert (o_eager - o_data).abs().max() > 1e-3 and (o_eager - dense).abs().max() > 1e-3
    o, st, grads = run(torch.compile(attend, backend="aot_eager", fullgraph=True))
    torch.testing.assert_close(st.tiles_visited, st_eager.tiles_visited)
    torch.testing.assert_close(o, o_eager, rtol=1e-6, atol=1e-6)
    for name, a, b in zip(("dq", "dk", "dv", "dlogf"), grads, grads_eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
