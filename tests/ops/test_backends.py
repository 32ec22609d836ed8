"""Every backend against the float64 dense reference: output and all four gradients."""

import pytest
import torch

from foxacp.testing import float64_reference, make_inputs, rel_err, run_fwd_bwd

# (B, Tq, Tk, Hq, Hkv, D): lengths that are not multiples of any block size, GQA, Tq < Tk.
SHAPES = [
    (1, 100, 100, 2, 2, 32),
    (2, 130, 130, 4, 2, 64),
    (2, 70, 200, 4, 1, 32),
    (1, 1, 77, 2, 2, 16),
]
CU_SEQLENS = [0, 1, 150, 203, 331]  # four ragged packed sequences, one of length 1


def _check(backend, dtype, inputs, tol, **kwargs):
    o, grads, g = run_fwd_bwd(inputs, backend=backend, **kwargs)
    o_ref, grads_ref = float64_reference(inputs, g, **kwargs)
    assert o.dtype == inputs[0].dtype
    errs = [rel_err(o, o_ref)] + [rel_err(a, b) for a, b in zip(grads, grads_ref, strict=True)]
    assert max(errs) < tol, f"{backend} {dtype}: rel errors o,dq,dk,dv,dlogf = {errs}"


@pytest.mark.parametrize("log_eps", [None, -10.0, -3.0])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("backend,dtype,tol", [("triton", torch.float32, 1e-4), ("torch", torch.float32, 1e-4)])
def test_backend_matches_reference(backend, dtype, tol, shape, log_eps):
    inputs = make_inputs(*shape, dtype=dtype)
    _check(backend, dtype, inputs, tol, log_eps=log_eps)


@pytest.mark.parametrize("seed", [1, 2])
def test_triton_gate_gradient_fast_gates(seed):
    # ~1.3 nats of forgetting per token. The gate gradient sums dS over rows (dQ) and columns (dK/dV); those
    # sums cancel only if both kernels round the scores alike: measured 2-3e-6 (5e-5 when they did not).
    inputs = make_inputs(1, 300, 300, 2, 2, 32, gate_mean=-1.0, gate_spread=1.0, seed=seed)
    _check("triton", torch.float32, inputs, 1e-5, log_eps=None)


@pytest.mark.parametrize("log_eps", [None, -3.0])
def test_triton_fp16(log_eps):
    inputs = make_inputs(2, 130, 130, 4, 2, 32, dtype=torch.float16)
    _check("triton", torch.float16, inputs, 5e-3, log_eps=log_eps)


@pytest.mark.parametrize("log_eps", [None, -10.0, -3.0])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_packed_sequences(backend, log_eps):
    cu = torch.tensor(CU_SEQLENS, dtype=torch.int32)
    inputs = make_inputs(1, CU_SEQLENS[-1], CU_SEQLENS[-1], 4, 2, 32, gate_mean=0.5)
    _check(backend, torch.float32, inputs, 1e-4, log_eps=log_eps, cu_seqlens=cu)


def test_packed_equals_separate_sequences():
    """No query sees another sequence and the gate restarts: packing == running each sequence alone."""
    import foxacp

    cu = CU_SEQLENS
    q, k, v, g = make_inputs(1, cu[-1], cu[-1], 2, 1, 16)
    packed = foxacp.forgetting_attention(q, k, v, g, cu_seqlens=torch.tensor(cu, dtype=torch.int32), backend="torch")
    for a, b in zip(cu, cu[1:], strict=False):
        alone = foxacp.forgetting_attention(q[:, a:b], k[:, a:b], v[:, a:b], g[:, a:b], backend="torch")
        assert rel_err(packed[:, a:b], alone) < 1e-6


def test_auto_backend_runs_on_cpu():
    import foxacp

    inputs = make_inputs(1, 65, 65, 2, 2, 32)
    o = foxacp.forgetting_attention(*inputs)
    ref = foxacp.forgetting_attention(*inputs, backend="reference")
    assert rel_err(o, ref) < 1e-4


@pytest.mark.parametrize("layout", ["qkv_fused", "heads_major"])
def test_triton_strided_views(layout):
    """q, k, v as views the copy engine cannot read directly (or can, with a row stride of 3 H D)."""
    B, T, H, D = 2, 97, 2, 32
    q, k, v, g = make_inputs(B, T, T, H, H, D, seed=5)
    if layout == "qkv_fused":  # (B, T, 3, H, D) split along dim 2: row stride 3 H D, heads contiguous
        qkv = torch.stack([q, k, v], dim=2)
        q, k, v = qkv.unbind(2)
    else:  # (B, H, T, D) transposed to (B, T, H, D): heads not adjacent in memory
        q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    assert q.stride(2) != D or q.stride(1) != H * D
    _check("triton", torch.float32, (q, k, v, g), 1e-4, log_eps=-10.0)


@pytest.mark.parametrize(
    "shape,log_eps", [((1, 300, 300, 2, 2, 32), None), ((1, 300, 300, 2, 2, 32), -3.0), ((2, 70, 200, 4, 1, 32), -3.0)]
)
def test_triton_mixed_blocks(shape, log_eps):
    """Blocks as on Hopper, where the kernels' blocks differ: KC on the forward's key blocks (wider than dQ's
    and dK/dV's), QC on dQ's query blocks (taller than dK/dV's). Fast gates: the scores must still agree.
    The tables round to 2^-24 of the decay across a block: across 64 keys here, 1e-5 of dlogf (measured;
    a wrong table block gives 1e29)."""
    from foxacp.ops.config import Blocks, KernelConfig, use_kernel_config

    cfg = KernelConfig(64, 64, Blocks(32, 64, head_group=2), Blocks(16, 16, head_group=3, sub=16), Blocks(32, 32))
    inputs = make_inputs(*shape, gate_mean=-1.0, gate_spread=1.0, seed=3)
    with use_kernel_config(cfg):
        _check("triton", torch.float32, inputs, 3e-5, log_eps=log_eps)


def test_use_kernel_config_nests_and_restores():
    from foxacp.ops.config import Blocks, KernelConfig, kernel_config, use_kernel_config

    base = kernel_config(torch.device("cpu"), 32)
    a = KernelConfig(64, 64, *[Blocks(32, 32)] * 3)
    b = KernelConfig(64, 64, *[Blocks(16, 16, sub=16)] * 3)
    with use_kernel_config(a):
        assert kernel_config(torch.device("cpu"), 32) is a
        with use_kernel_config(b):
            assert kernel_config(torch.device("cpu"), 128) is b
        assert kernel_config(torch.device("cpu"), 32) is a
    assert kernel_config(torch.device("cpu"), 32) is base
    with pytest.raises(TypeError, match="cfg"), use_kernel_config("64x64"):
        pass
