"""Inputs at the edge of what the ops take: each is computed right (against a float64 computation written from
the definition in method.md, independent of the library's reference backend) or refused with an error that
names the argument. Each of these once passed validation and then came out wrong or failed obscurely."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import foxacp
from foxacp.ops.paged import forgetting_attention_with_paged_kvcache

from .test_kvcache import dense_float64, make_cache
from .test_paged import paginate


def definition_float64(q, k, v, log_fgate, sm_scale=None, cu_seqlens=None):
    """o_i = sum_{j <= i + Tk - Tq} softmax_j(sm_scale q_i.k_j + c_i - c_j) v_j, c = cumsum(log f), in float64,
    differentiable (autograd) in all four inputs; ``cu_seqlens`` restarts c and the mask per sequence."""
    q, k, v, g = (t if t.dtype == torch.float64 else t.double() for t in (q, k, v, log_fgate))
    B, Tq, Hq, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    k, v = k.repeat_interleave(Hq // Hkv, 2), v.repeat_interleave(Hq // Hkv, 2)
    if cu_seqlens is None:
        segments = [(b, 0, Tq, 0, Tk) for b in range(B)]
    else:
        cu = cu_seqlens.tolist()
        segments = [(0, a, e, a, e) for a, e in zip(cu, cu[1:], strict=False)]
    rows = []
    for b, qa, qe, ka, ke in segments:
        c = g[b, ka:ke].cumsum(0)
        lq, lk = qe - qa, ke - ka
        s = torch.einsum("ihd,jhd->ijh", q[b, qa:qe], k[b, ka:ke]) * scale + (c[lk - lq :, None] - c[None, :])
        keep = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None] + (lk - lq)
        p = torch.softmax(s.masked_fill(~keep[..., None], -math.inf), 1)
        rows.append((b, torch.einsum("ijh,jhd->ihd", p, v[b, ka:ke])))
    if cu_seqlens is not None:
        return torch.cat([r for _, r in rows])[None]
    return torch.stack([r for _, r in rows])


def _warns_of_tables(backend):
    """The Triton path warns that it hands the call to PyTorch; the PyTorch path has nothing to say."""
    if backend == "triton":
        return pytest.warns(UserWarning, match="takes the PyTorch path")
    return contextlib.nullcontext()


def _large_logit_inputs(logit: float, T: int = 130, D: int = 16):
    """One head whose queries all point along e1 with |sm_scale q.k| = ``logit``: key 0 agrees with them
    (+logit), every other key opposes them (-logit). Small noise keeps the gradients generic."""
    gen = torch.Generator().manual_seed(0)
    amp = math.sqrt(logit * math.sqrt(D))
    e1 = torch.zeros(D)
    e1[0] = 1.0
    q = (amp * e1).expand(1, T, 1, D).clone() + 0.01 * torch.randn(1, T, 1, D, generator=gen)
    k = (-amp * e1).expand(1, T, 1, D).clone() + 0.01 * torch.randn(1, T, 1, D, generator=gen)
    k[0, 0, 0] = amp * e1
    v = torch.randn(1, T, 1, D, generator=gen)
    return q, k, v, gen


# The Triton kernels' score tables saturate at ~2048 nats, harmless only while every |logit| < ~970
# (triton_gate.LOGIT_LIMIT): larger logits take the PyTorch path (value checks on), with a warning.


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_large_logits_with_a_large_in_block_decay_forward(backend):
    # Key 0 has logit +2000 and decay -4000 to every later query (one gate of -4000 at token 1, then f = 1);
    # every other key has logit -2000 and decay 0. True scores are all -2000: the rows of the second query
    # block average v uniformly. The Triton forward clamps key 0's table decay to about -3750 nats and puts
    # all the weight on v_0.
    q, k, v, _ = _large_logit_inputs(2000.0)
    g = torch.zeros(1, q.shape[1], 1)
    g[0, 1, 0] = -4000.0
    with _warns_of_tables(backend):
        o = foxacp.forgetting_attention(q, k, v, g, backend=backend, log_eps=None)
    ref = definition_float64(q, k, v, g)
    err = (o.double() - ref).abs().max().item()
    assert err < 1e-3, f"max |o - o_float64| = {err:.3e}"


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_large_negative_logits_backward(backend):
    # Every logit is about -6000 (all keys oppose the queries but key 0): the forward is fine, but the backward
    # query table QC holds -LSE ~ +6000 nats, which saturates (the tables assume every part is <= 0): the
    # gradients come out wrong (relative error ~1 on dq, dk, dv and dlog f).
    q, k, v, gen = _large_logit_inputs(6000.0)
    k[0, 0, 0] = -k[0, 0, 0]
    g = torch.nn.functional.logsigmoid(torch.randn(1, q.shape[1], 1, generator=gen) + 3.0)
    do = torch.randn(q.shape, generator=gen)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, g)]
    with _warns_of_tables(backend):
        foxacp.forgetting_attention(*leaves, backend=backend, log_eps=None).backward(do)
    refs = [t.detach().double().requires_grad_() for t in (q, k, v, g)]
    definition_float64(*refs).backward(do.double())
    # Errors relative to the larger of the reference's norm and the gradient's natural scale (as in
    # test_extreme): dq is a sum of nearly cancelling terms here, so its own norm is not the yardstick.
    qd, kd, vd = (t.double() for t in (q, k, v))
    vmax, kmax, qmax = (t.norm(dim=-1).max() for t in (vd, kd, qd))
    dn, scale = do.double().norm(), q.shape[-1] ** -0.5
    natural = (scale * dn * vmax * kmax, scale * dn * vmax * qmax, dn, dn * vmax)
    errs = {
        name: ((a.grad.double() - b.grad).norm() / max(b.grad.norm(), n)).item()
        for name, a, b, n in zip(("dq", "dk", "dv", "dlogf"), leaves, refs, natural, strict=True)
    }
    assert max(errs.values()) < 1e-2, f"relative gradient errors vs float64: {errs}"


@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
def test_a_max_seqlen_that_is_not_an_int_is_refused(backend):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 150, 2, 32, generator=gen) for _ in range(3))
    g = torch.nn.functional.logsigmoid(torch.randn(1, 150, 2, generator=gen) + 2)
    cu = torch.tensor([0, 70, 150], dtype=torch.int32)
    with pytest.raises(TypeError, match="max_seqlen must be an int"):
        foxacp.forgetting_attention(q, k, v, g, cu_seqlens=cu, max_seqlen=100.0, backend=backend)
    o = foxacp.forgetting_attention(q, k, v, g, cu_seqlens=cu, max_seqlen=100, backend=backend)
    err = (o.double() - definition_float64(q, k, v, g, cu_seqlens=cu)).abs().max().item()
    assert err < 1e-5


# backend="triton" on CPU tensors without TRITON_INTERPRET: refused by validation (Triton itself would fail with
# "0 active drivers ([]). There should only be one.").

_NO_INTERPRETER = """
import torch, foxacp
q = torch.randn(1, 64, 2, 32)
g = torch.zeros(1, 64, 2)
calls = [
    lambda: foxacp.forgetting_attention(q, q, q, g, backend="triton"),
    lambda: foxacp.forgetting_attention_with_kvcache(q[:, :1], q, q, g.cumsum(1), torch.tensor([64], dtype=torch.int32),
                                                     backend="triton"),
]
for call in calls:
    try:
        call()
        print("ok")
    except ValueError as err:
        print("clear" if "TRITON_INTERPRET" in str(err) else "UNCLEAR", err)
    except Exception as err:
        print("UNCLEAR:", type(err).__name__, err)
"""


def test_triton_backend_on_cpu_without_interpreter_is_refused_clearly():
    env = {key: val for key, val in os.environ.items() if key != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", _NO_INTERPRETER], env=env, capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stderr[-2000:]
    assert all(line.startswith("clear") for line in lines), lines


# The decode kernels have no backward: with a gradient needed, the default backend is PyTorch's and "triton" is
# refused at the call (not at backward, with "no autograd formula was registered").


def test_kvcache_with_requires_grad_differentiates_or_refuses_at_the_call():
    q, k, v, c, lens, _ = make_cache(1, 2, 70, 2, 2, 32, [70])
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    foxacp.forgetting_attention_with_kvcache(*leaves, c, lens, log_eps=None).sum().backward()
    refs = [t.double().requires_grad_() for t in (q, k, v)]
    dense_float64(*refs, c, lens).sum().backward()
    for t, r in zip(leaves, refs, strict=True):
        torch.testing.assert_close(t.grad.double(), r.grad, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no backward"):
        foxacp.forgetting_attention_with_kvcache(leaves[0], k, v, c, lens, backend="triton")
    with torch.no_grad():
        foxacp.forgetting_attention_with_kvcache(leaves[0], k, v, c, lens, backend="triton")


# The paged op's qk_bound: a tensor's values are checked like a float's (finite, >= 0; a negative or NaN bound
# gave NaN or a wrong output), and its shape must be (), (1,) or (Hq,).


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("bound", [-100.0, math.nan])
def test_paged_tensor_qk_bound_values_are_checked(backend, bound):
    q, k, v, c, lens, _ = make_cache(1, 1, 200, 2, 2, 32, [200])
    kp, vp, cp, table, starts = paginate(k, v, c, lens, [[0, 0]])
    with pytest.raises(ValueError, match="qk_bound must be finite and >= 0"):
        forgetting_attention_with_paged_kvcache(
            q, kp, vp, cp, table, starts, lens, qk_bound=torch.tensor([bound, bound]), backend=backend
        )


def test_paged_qk_bound_of_shape_hq_by_1_is_refused():
    q, k, v, c, lens, _ = make_cache(1, 1, 200, 2, 2, 32, [200])
    kp, vp, cp, table, starts = paginate(k, v, c, lens, [[0, 0]])
    with pytest.raises(ValueError, match="qk_bound must be a float or a tensor of shape"):
        forgetting_attention_with_paged_kvcache(
            q, kp, vp, cp, table, starts, lens, qk_bound=torch.ones(2, 1), backend="torch"
        )


def _like(dtype, head_dim, device):
    """What auto_backend reads of q (a stand-in: a CUDA tensor cannot be made on this machine)."""
    return SimpleNamespace(shape=(1, 1, 1, head_dim), dtype=dtype, device=torch.device(device))


def test_auto_backend_picks_triton_only_where_its_kernels_serve(monkeypatch):
    """Triton for the kernels' head dims and dtypes: fp16/bf16 on CUDA (fp32 only for the decode kernels, which
    compute it in IEEE precision), fp16/fp32 under the interpreter; PyTorch for everything else (float64, head
    dim 40, the CPU without the interpreter)."""
    from foxacp.ops.validate import auto_backend

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    f16, bf16, f32, f64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
    cuda = {
        (dt, d): auto_backend(_like(dt, d, "cuda"), fp32_on_gpu=False) for dt in (f16, bf16, f32, f64) for d in (40, 64)
    }
    assert [k for k, v in cuda.items() if v == "triton"] == [(f16, 64), (bf16, 64)]
    assert auto_backend(_like(f32, 64, "cuda")) == "triton"
    assert [dt for dt in (f16, bf16, f32, f64) if auto_backend(_like(dt, 64, "cpu")) == "triton"] == [f16, f32]
    assert auto_backend(_like(f32, 40, "cpu")) == "torch"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert auto_backend(_like(f32, 64, "cpu")) == "torch"
