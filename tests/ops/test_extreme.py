"""Inputs at the edge of what the op accepts: extreme gates, resets, tiny and large sm_scale.

Each case runs the Triton kernels (the interpreter on CPU) and the PyTorch path against the float64 reference,
output and all four gradients. Errors are relative to the larger of the reference's norm and the quantity's
natural scale, so that a gradient that should be 0 (a head that forgets everything has dq = dk = 0) is
judged against what rounding can give, not against 0.
"""

import pytest
import torch

import foxacp
from foxacp.testing import float64_reference, make_inputs, run_fwd_bwd

B, T, H, D = 1, 130, 2, 32  # 130: not a multiple of any block; two query blocks and a partial one


def _scaled_errors(inputs, grad_out, outs, refs, sm_scale):
    """||a - b|| / max(||b||, natural scale) for o, dq, dk, dv, dlogf."""
    q, k, v, _ = (t.double() for t in inputs)
    do = grad_out.double()
    vmax, kmax, qmax = (t.norm(dim=-1).max() for t in (v, k, q))
    scale = sm_scale if sm_scale is not None else q.shape[-1] ** -0.5
    natural = [v.norm(), scale * do.norm() * vmax * kmax, scale * do.norm() * vmax * qmax, do.norm(), do.norm() * vmax]
    return [
        ((a.double() - b.double()).norm() / max(b.double().norm(), n)).item()
        if torch.isfinite(a).all()
        else float("inf")
        for a, b, n in zip(outs, refs, natural, strict=True)
    ]


def _gates(pattern: str) -> torch.Tensor:
    g = make_inputs(B, T, T, H, H, D, seed=5, gate_mean=3.0)[3]
    kind, _, value = pattern.partition("@")
    if kind == "all":
        return torch.full_like(g, float(value))
    if kind == "reset":  # one token forgets everything; the others forget slowly
        g[:, int(value)] = -float("inf") if int(value) == 77 else -1e30
        return g
    if kind == "mixed":  # head 0 forgets everything at every token, head 1 slowly
        g[..., 0] = float(value)
        return g
    raise ValueError(pattern)


PATTERNS = ["all@-50", "all@-100", "all@-1e4", "all@-1e30", "all@-inf", "reset@0", "reset@40", "reset@63"]
PATTERNS += ["reset@64", "reset@77", "reset@129", "mixed@-1e30", "mixed@-30"]


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("log_eps", [None, -10.0])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_extreme_gates_match_float64(pattern, log_eps, backend):
    q, k, v, _ = make_inputs(B, T, T, H, H, D, seed=6)
    inputs = (q, k, v, _gates(pattern))
    o, grads, g = run_fwd_bwd(inputs, backend=backend, log_eps=log_eps)
    o_ref, grads_ref = float64_reference(inputs, g, log_eps=log_eps)
    errs = _scaled_errors(inputs, g, [o, *grads], [o_ref, *grads_ref], None)
    assert max(errs) < 2e-6, f"{pattern}: errors o,dq,dk,dv,dlogf = {errs}"
    if pattern.startswith("all"):  # every key but a row's own has weight 0: o_i = v_i
        assert (o - v).abs().max() < 1e-5


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("sm_scale", [1e-4, 3e-6, 30.0])
@pytest.mark.parametrize("gate_mean", [3.0, -1.0])
def test_sm_scale_extremes_match_float64(sm_scale, gate_mean, backend):
    # q, k grow as sm_scale shrinks, so the logits still matter; at 30 they are large and peaked
    q, k, v, g = make_inputs(B, T, T, H, H, D, seed=7, gate_mean=gate_mean)
    grow = min(30.0, (0.2 / sm_scale) ** 0.5)
    inputs = (q * grow, k * grow, v, g)
    o, grads, go = run_fwd_bwd(inputs, backend=backend, sm_scale=sm_scale, log_eps=-10.0)
    o_ref, grads_ref = float64_reference(inputs, go, sm_scale=sm_scale, log_eps=-10.0)
    errs = _scaled_errors(inputs, go, [o, *grads], [o_ref, *grads_ref], sm_scale)
    # Large logits amplify float32 rounding of q.k in the softmax (the dense torch path alike).
    tol = 2e-4 if sm_scale * grow**2 > 10 else 2e-6
    assert max(errs) < tol, f"sm_scale {sm_scale}: errors o,dq,dk,dv,dlogf = {errs}"


def test_triton_fp16_extreme_gates():
    q, k, v, _ = make_inputs(B, T, T, H, H, D, seed=8, dtype=torch.float16)
    for pattern in ("all@-1e30", "reset@40", "mixed@-30"):
        inputs = (q, k, v, _gates(pattern))
        o, grads, g = run_fwd_bwd(inputs, backend="triton", log_eps=-10.0)
        o_ref, grads_ref = float64_reference(inputs, g, log_eps=-10.0)
        errs = _scaled_errors(inputs, g, [o, *grads], [o_ref, *grads_ref], None)
        assert max(errs) < 2e-3, f"{pattern}: errors o,dq,dk,dv,dlogf = {errs}"


def test_floor_gives_gate_gradient_zero_and_neg_inf_is_a_reset():
    q, k, v, g = make_inputs(B, T, T, H, H, D, seed=9)
    g[:, 50] = -float("inf")
    for backend in ("triton", "torch", "reference"):
        o, grads, _ = run_fwd_bwd((q, k, v, g), backend=backend)
        assert torch.isfinite(o).all() and all(torch.isfinite(x).all() for x in grads), backend
        assert (grads[3][:, 50] == 0).all(), backend
    # Rows after a reset see only keys from it on: the same as running the tail alone.
    after = foxacp.forgetting_attention(q, k, v, g, backend="triton")[:, 50:]
    tail = g[:, 50:].clone()
    tail[:, 0] = 0.0  # a sequence's first gate never enters a decay
    alone = foxacp.forgetting_attention(q[:, 50:], k[:, 50:], v[:, 50:], tail, backend="torch")
    assert (after - alone).abs().max() < 1e-5


def test_nan_gates_are_refused():
    q, k, v, g = make_inputs(B, T, T, H, H, D, seed=10)
    g[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="log_fgate"):
        foxacp.forgetting_attention(q, k, v, g)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("pattern", ["all@-100", "all@-1e30", "reset@40", "mixed@-30"])
@pytest.mark.parametrize("log_eps", [None, -10.0])
def test_gpu_extreme_gates(dtype, pattern, log_eps):
    """The same cases on the device, bf16 and fp16, with Hopper's blocks: errors as on ordinary gates."""
    from foxacp.testing import TOLERANCE

    q, k, v, _ = (t.cuda() for t in make_inputs(B, T, T, H, H, 64, seed=11))
    q, k, v = (t.to(dtype) for t in (q, k, v))
    inputs = (q, k, v, _gates(pattern).cuda())
    o, grads, g = run_fwd_bwd(inputs, log_eps=log_eps)
    o_ref, grads_ref = float64_reference(inputs, g, log_eps=log_eps)
    errs = _scaled_errors(inputs, g, [o, *grads], [o_ref, *grads_ref], None)
    assert max(errs) < TOLERANCE[dtype] / 4, f"{pattern}: errors o,dq,dk,dv,dlogf = {errs}"


HOPPER_BLOCKS = {  # the shapes of ops/config.py's sm_90 table: KC blocks wider than dQ's, QC taller than dK/dV's
    "64-short": ((128, 128), (64, 64), (64, 64)),
    "64-long": ((128, 128), (64, 64), (128, 64)),
    "128": ((128, 64), (32, 64), (64, 64)),
}


@pytest.mark.parametrize("blocks", list(HOPPER_BLOCKS))
@pytest.mark.parametrize("case", ["reset@200", "reset@255", "reset@130", "steep", "gentle", "queries-behind"])
def test_hopper_blocks_match_float64(blocks, case):
    """Hopper's blocks under the interpreter, where the tables' blocks differ from the kernels': a reference key
    of a diagonal KC block can lie past the rows' causal end (a reset there once gave dq = inf on an H200),
    steep and gentle regions take the exact loops and the fast tables, and queries may sit behind the keys."""
    from foxacp.ops.config import Blocks, KernelConfig, use_kernel_config

    fwd, dkdv, dq = (Blocks(*b) for b in HOPPER_BLOCKS[blocks])
    cfg = KernelConfig(128, 128, fwd, dkdv, dq)
    Tq = 170 if case == "queries-behind" else 300
    q, k, v, _ = make_inputs(1, Tq, 300, 2, 1, 64, seed=12)
    g = torch.full((1, 300, 2), -0.05)
    if case.startswith("reset"):
        g[:, int(case.partition("@")[2])] = -1e30
    elif case == "steep":
        g[..., 0] = -3.0  # 380 nats per block: the exact loops
    elif case == "queries-behind":
        g[:, 150] = -1e30
    with use_kernel_config(cfg):
        o, grads, go = run_fwd_bwd((q, k, v, g), backend="triton", log_eps=-10.0)
    o_ref, grads_ref = float64_reference((q, k, v, g), go, log_eps=-10.0)
    errs = _scaled_errors((q, k, v, g), go, [o, *grads], [o_ref, *grads_ref], None)
    assert max(errs) < 2e-6, f"errors o,dq,dk,dv,dlogf = {errs}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_resets_past_the_causal_end_of_a_block(dtype):
    """The case the float64 check caught on an H200 (dq = inf): resets that fall inside a diagonal KC block but
    past its rows' causal end, at 4k tokens with the device's own blocks."""
    from foxacp.testing import TOLERANCE

    T = 4096
    gen = torch.Generator(device="cuda").manual_seed(4)
    q, k, v = (torch.randn(2, T, 4, 64, device="cuda", generator=gen).to(dtype) for _ in range(3))
    g = torch.nn.functional.logsigmoid(3.0 + torch.randn(2, T, 4, device="cuda", generator=gen)).float()
    g[:, [T // 3, T // 2 + 5, T - 1]] = -1e30
    o, grads, go = run_fwd_bwd((q, k, v, g), log_eps=None)
    o_ref, grads_ref = float64_reference((q, k, v, g), go, log_eps=None)
    errs = _scaled_errors((q, k, v, g), go, [o, *grads], [o_ref, *grads_ref], None)
    assert max(errs) < TOLERANCE[dtype] / 4, f"errors o,dq,dk,dv,dlogf = {errs}"
