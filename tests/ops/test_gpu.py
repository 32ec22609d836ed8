"""GPU-only: the Triton kernels against float64 on the device (skipped without CUDA).

The full grid (bf16/fp16, head dims 64/128, up to 16k tokens, 64k forward) is
``python -m foxacp.bench.correctness``; this is its smaller pytest form (both check through foxacp.testing).
"""

import pytest
import torch

import foxacp
from foxacp.testing import TOLERANCE, check, check_huge, check_long, float64_reference, make_inputs, rel_err

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("log_eps", [None, -10.0])
def test_plain_and_gqa(dtype, head_dim, log_eps):
    case = check(B=2, Tq=1000, Tk=1000, Hq=4, Hkv=2, D=head_dim, dtype=dtype, log_eps=log_eps)
    assert case.worst < TOLERANCE[dtype], case


@pytest.mark.parametrize("log_eps", [None, -10.0])
def test_long_context_and_queries_behind_keys(log_eps):
    case = check(B=1, Tq=16384, Tk=16384, Hq=2, Hkv=1, D=64, dtype=torch.bfloat16, log_eps=log_eps)
    assert case.worst < TOLERANCE[torch.bfloat16], case
    case = check(B=2, Tq=300, Tk=2000, Hq=4, Hkv=1, D=64, dtype=torch.bfloat16, log_eps=log_eps)
    assert case.worst < TOLERANCE[torch.bfloat16], case


def test_packed_sequences():
    cu = torch.tensor([0, 1, 2500, 3001, 7000], dtype=torch.int32, device="cuda")
    case = check(B=1, Tq=7000, Tk=7000, Hq=4, Hkv=2, D=64, dtype=torch.bfloat16, log_eps=-10.0, cu_seqlens=cu)
    assert case.worst < TOLERANCE[torch.bfloat16], case


def test_64k_forward():
    case = check_long(65536, 2, 64, torch.bfloat16)
    assert case.err_o < TOLERANCE[torch.bfloat16] and case.flop_saving > 0.9, case


def test_beyond_32bit_offsets():
    """B*T*H*D > 2^31: the kernels address with 64-bit bases, so the last rows are still right."""
    case = check_huge()
    assert 2**21 * 16 * 64 > 2**31 - 1
    assert case.worst < TOLERANCE[torch.bfloat16], case


def test_gpu_boundary_search_matches_torch_twin():
    """The op's one-launch Triton search finds exactly the searchsorted twin's boundaries (packed, Tq < Tk)."""
    from foxacp.ops.acp import plan_tiles, qk_bound_from_data, threshold
    from foxacp.ops.gate import cumulative_gate
    from foxacp.ops.search import run_plan as _plan
    from foxacp.ops.validate import check_inputs
    from foxacp.testing import make_gates

    gen = torch.Generator(device="cuda").manual_seed(3)
    cases = [(1, 7000, 7000, torch.tensor([0, 1, 2500, 3001, 7000], dtype=torch.int32, device="cuda")),
             (2, 3000, 16384, None)]  # fmt: skip
    for B, Tq, Tk, cu in cases:
        q = torch.randn(B, Tq, 4, 64, device="cuda", generator=gen, dtype=torch.bfloat16)
        k = torch.randn(B, Tk, 4, 64, device="cuda", generator=gen, dtype=torch.bfloat16)
        g = make_gates(B, Tk, 4, "cuda", gen)
        problem = check_inputs(q, k, k, g, None, cu, None, -10.0, "triton")
        qp, kp = q.reshape(-1, 4, 64), k.reshape(-1, 4, 64)
        c_t = cumulative_gate(g.reshape(-1, 4), problem.cu_k, problem.uniform, problem.num_seqs)
        got = _plan(qp, kp, c_t, problem, -10.0, None, 128, 128)
        want = plan_tiles(c_t, threshold(qk_bound_from_data(qp, kp, problem), problem, -10.0), problem, 128, 128)
        assert torch.equal(got.kv_lo, want.kv_lo) and torch.equal(got.q_hi, want.q_hi)
        assert 0.2 < got.stats.flop_saving < 1.0


@pytest.mark.parametrize("log_eps", [None, -10.0])
def test_cuda_graph_capture(log_eps):
    """The op (forward and backward, the boundary search included) captures in a CUDA graph, and a replay on
    new values gives eager's bits: short, host-bound calls can drop their host time this way (value checks
    off: they read the gates back)."""
    import foxacp
    from foxacp.testing import make_inputs

    shape = (2, 1000, 1000, 4, 2, 64)
    previous = foxacp.set_value_checks(False)
    try:
        leaves = [t.requires_grad_() for t in make_inputs(*shape, dtype=torch.bfloat16, device="cuda", seed=1)]
        do = torch.randn(2, 1000, 4, 64, device="cuda", dtype=torch.bfloat16)

        def step():
            o = foxacp.forgetting_attention(*leaves, log_eps=log_eps)  # the bound from the data, on the GPU
            return (o, *torch.autograd.grad(o, leaves, do))

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = step()
        with torch.no_grad():
            for t, new in zip(leaves, make_inputs(*shape, dtype=torch.bfloat16, device="cuda", seed=2), strict=True):
                t.copy_(new)
        graph.replay()
        assert all(torch.equal(a, b) for a, b in zip(captured, step(), strict=True))
    finally:
        foxacp.set_value_checks(previous)


def test_fp32_goes_to_the_pytorch_path_not_tf32_kernels():
    """fp32 on a GPU: the training kernels would round it to TF32, so backend=None takes the PyTorch path (fp32
    accurate) and backend="triton" is refused."""
    inputs = [t.cuda() for t in make_inputs(1, 300, 300, 2, 2, 64, dtype=torch.float32)]
    o = foxacp.forgetting_attention(*inputs)
    o_ref, _ = float64_reference(inputs, torch.zeros_like(o))
    assert rel_err(o, o_ref) < 1e-5
    with pytest.raises(TypeError, match="fp16 or bf16 on a GPU"):
        foxacp.forgetting_attention(*inputs, backend="triton")
