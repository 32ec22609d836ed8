"""Shared input makers and error measures for the op tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import foxacp


def make_inputs(B, Tq, Tk, Hq, Hkv, D, dtype=torch.float32, device="cpu", gate_mean=2.0, gate_spread=2.0, seed=None):
    """Random q, k, v (dtype) and log forget gates (float32) with per-head forgetting rates.

    gate_mean: larger means slower forgetting (log f = logsigmoid(gate_mean + spread * noise)).
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else torch.seed() % 2**31)
    q = torch.randn(B, Tq, Hq, D, generator=gen, device=device).to(dtype)
    k = torch.randn(B, Tk, Hkv, D, generator=gen, device=device).to(dtype)
    v = torch.randn(B, Tk, Hkv, D, generator=gen, device=device).to(dtype)
    head_bias = torch.linspace(-1.0, 1.0, Hq, device=device) * gate_spread
    logits = gate_mean + head_bias + torch.randn(B, Tk, Hq, generator=gen, device=device)
    return q, k, v, F.logsigmoid(logits).float()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64; NaN anywhere gives inf."""
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def run_fwd_bwd(inputs, grad_out=None, **kwargs):
    """Run forgetting_attention on fresh leaves; return (output, [dq, dk, dv, dlogf], grad_out)."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    o = foxacp.forgetting_attention(*leaves, **kwargs)
    if grad_out is None:
        grad_out = torch.randn_like(o)
    o.backward(grad_out.to(o.dtype))
    return o.detach(), [t.grad for t in leaves], grad_out


def float64_reference(inputs, grad_out, **kwargs):
    """The dense reference in float64 on the same values (gates stay float32)."""
    q, k, v, g = inputs
    ref_in = [q.double(), k.double(), v.double(), g]
    kwargs = {**kwargs, "backend": "reference"}
    return run_fwd_bwd(ref_in, grad_out.double(), **kwargs)[:2]
