"""The training op inside a CUDA-graph capture with value checks on (as torch.compile's "reduce-overhead" records
a block): the checks that read values back to the host stand aside, and the replay equals the eager call.

    pytest -m gpu tests/ops/test_capture_gpu.py
"""

from __future__ import annotations

import pytest
import torch

import foxacp

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("log_eps", [None, -10.0])
def test_forward_and_backward_capture_with_value_checks_on(log_eps):
    torch.manual_seed(0)
    B, T, H, D = 2, 1000, 4, 64
    q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = (-torch.rand(B, T, H, device="cuda") * 0.2).requires_grad_()
    bound = torch.full((H,), 30.0, device="cuda")
    do = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)

    def run():
        o = foxacp.forgetting_attention(q, k, v, g, log_eps=log_eps, qk_bound=bound)
        return o, *torch.autograd.grad(o, (q, k, v, g), do)

    previous = foxacp.set_value_checks(True)
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            want = [t.clone() for t in run()]  # warm-up off the default stream, as torch.cuda.graph asks
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static = run()
        graph.replay()
        torch.cuda.synchronize()
    finally:
        foxacp.set_value_checks(previous)
    for got, ref in zip(static, want, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
