"""Ground truth for tests and on-device checks: random inputs, error measures, float64 references, an op counter.

Used by the test suite and by `foxacp.bench` alike, so both compare the kernels against the same thing:
the dense reference backend run in float64 on the kernels' own input values (the gates stay float32, as
the op takes them).
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

import foxacp

# Pass thresholds by norm, relative to float64 (bf16 operands land between 1e-3 and 1e-2).
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}


def counting_block_step() -> tuple[Callable, list]:
    """(run_block, graphs): ``model.lm.block_step`` compiled afresh (full graph, static shapes) with a backend
    that runs each traced graph eagerly and appends it to ``graphs``, to count what torch.compile traces."""
    from foxacp.model.lm import block_step

    graphs: list = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    torch._dynamo.reset()
    return torch.compile(block_step, backend=backend, fullgraph=True, dynamic=False), graphs


def make_inputs(
    B: int,
    Tq: int,
    Tk: int,
    Hq: int,
    Hkv: int,
    D: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    gate_mean: float = 2.0,
    gate_spread: float = 2.0,
    seed: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random q (B, Tq, Hq, D), k and v (B, Tk, Hkv, D) in ``dtype`` and log forget gates (B, Tk, Hq) float32
    with per-head forgetting rates: log f = logsigmoid(gate_mean + head bias in [-spread, spread] + noise),
    so a larger ``gate_mean`` forgets more slowly. ``seed`` None draws a fresh seed."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else torch.seed() % 2**31)
    q = torch.randn(B, Tq, Hq, D, generator=gen, device=device).to(dtype)
    k = torch.randn(B, Tk, Hkv, D, generator=gen, device=device).to(dtype)
    v = torch.randn(B, Tk, Hkv, D, generator=gen, device=device).to(dtype)
    head_bias = torch.linspace(-1.0, 1.0, Hq, device=device) * gate_spread
    logits = gate_mean + head_bias + torch.randn(B, Tk, Hq, generator=gen, device=device)
    return q, k, v, F.logsigmoid(logits).float()


def make_gates(B: int, T: int, H: int, device: str | torch.device, gen: torch.Generator) -> Tensor:
    """Log forget gates (B, T, H) float32, per head from fast (log f ~ -1.3) to slow (~ -0.007), with token
    noise drawn from ``gen``."""
    head = torch.linspace(-1.0, 5.0, H, device=device)
    return F.logsigmoid(head + torch.randn(B, T, H, device=device, generator=gen)).float()


def rel_err(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b|| in float64; inf when ``a`` holds a NaN or inf or the ratio is not finite, so a NaN
    never passes a tolerance."""
    a, b = a.detach().double(), b.detach().double()
    if not torch.isfinite(a).all():
        return math.inf
    err = ((a - b).norm() / b.norm().clamp_min(1e-300)).item()
    return err if math.isfinite(err) else math.inf


def run_fwd_bwd(
    inputs: Sequence[Tensor], grad_out: Tensor | None = None, **kwargs
) -> tuple[Tensor, list[Tensor], Tensor]:
    """Run ``foxacp.forgetting_attention(q, k, v, log_fgate, **kwargs)`` on fresh leaf copies of ``inputs`` and
    backpropagate ``grad_out`` (standard normal when None, cast to the output's dtype).

    Returns (output, [dq, dk, dv, dlog_fgate], grad_out); errors of the op propagate unchanged.
    """
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    o = foxacp.forgetting_attention(*leaves, **kwargs)
    if grad_out is None:
        grad_out = torch.randn_like(o)
    o.backward(grad_out.to(o.dtype))
    return o.detach(), [t.grad for t in leaves], grad_out


def float64_reference(inputs: Sequence[Tensor], grad_out: Tensor, **kwargs) -> tuple[Tensor, list[Tensor]]:
    """The dense reference backend in float64 on the same values (q, k, v and grad_out in float64, the gates
    as given): (output, [dq, dk, dv, dlog_fgate]). ``kwargs`` go to the op (``backend`` is overridden)."""
    q, k, v, g = inputs
    ref_in = [q.double(), k.double(), v.double(), g]
    return run_fwd_bwd(ref_in, grad_out.double(), **{**kwargs, "backend": "reference"})[:2]


def banded_reference(q: Tensor, k: Tensor, v: Tensor, c: Tensor, sm_scale: float, window: int, chunk: int = 2048):
    """Attention over the last ``window`` keys of each query, in chunks of ``chunk`` query rows, for contexts
    where a dense T x T reference does not fit. q, k, v (T, H, D); c (T, H) cumulative log gate. Exact when
    the weights outside the band are negligible (fast gates)."""
    T = q.shape[0]
    outs = []
    for a in range(0, T, chunk):
        b, lo = min(a + chunk, T), max(0, a - window + 1)
        decay = c[a:b].t()[:, :, None] - c[lo:b].t()[:, None, :]
        s = torch.einsum("ihd,jhd->hij", q[a:b], k[lo:b]) * sm_scale + decay
        i = torch.arange(a, b, device=q.device)[:, None]
        j = torch.arange(lo, b, device=q.device)[None, :]
        s = s.masked_fill((j > i) | (j <= i - window), -torch.inf)
        outs.append(torch.einsum("hij,jhd->ihd", torch.softmax(s, -1), v[lo:b]))
    return torch.cat(outs)


@dataclass
class Case:
    """One on-device check: its shape, the relative errors of the output and the four gradients against
    float64 (NaN where not checked), the ACP FLOP saving and the seconds the kernels took."""

    dtype: str
    head_dim: int
    seq: str  # "B x Tq/Tk" or "packed [lengths]"
    heads: str  # "Hq/Hkv"
    log_eps: float | None
    err_o: float = math.nan
    err_dq: float = math.nan
    err_dk: float = math.nan
    err_dv: float = math.nan
    err_dlogf: float = math.nan
    flop_saving: float = math.nan
    seconds: float = math.nan

    @property
    def worst(self) -> float:
        return max(self.err_o, self.err_dq, self.err_dk, self.err_dv, self.err_dlogf)


def check(B, Tq, Tk, Hq, Hkv, D, dtype, log_eps, cu_seqlens=None, device="cuda", seed=0) -> Case:
    """Run one case (shapes as in ``make_inputs``, gates from ``make_gates``) forward and backward through the
    Triton backend and the float64 reference; return the relative errors."""
    gen = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(B, Tq, Hq, D, device=device, generator=gen).to(dtype)
    k = torch.randn(B, Tk, Hkv, D, device=device, generator=gen).to(dtype)
    v = torch.randn(B, Tk, Hkv, D, device=device, generator=gen).to(dtype)
    g = make_gates(B, Tk, Hq, device, gen)
    do = torch.randn(B, Tq, Hq, D, device=device, generator=gen)
    kw = dict(cu_seqlens=cu_seqlens, log_eps=log_eps)

    start = time.perf_counter()
    leaves = [t.clone().requires_grad_() for t in (q, k, v, g)]
    o, stats = foxacp.forgetting_attention(*leaves, backend="triton", return_stats=True, **kw)
    o.backward(do.to(dtype))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    o_ref, grads_ref = float64_reference((q, k, v, g), do, **kw)
    errs = [rel_err(o, o_ref)] + [rel_err(a.grad, b) for a, b in zip(leaves, grads_ref, strict=True)]
    seq = f"{B}x{Tq}/{Tk}" if cu_seqlens is None else "packed " + "/".join(map(str, cu_seqlens.diff().tolist()))
    del o_ref, grads_ref
    torch.cuda.empty_cache()
    return Case(str(dtype).removeprefix("torch."), D, seq, f"{Hq}/{Hkv}", log_eps, *errs, stats.flop_saving, seconds)


def check_long(T: int, H: int, D: int, dtype: torch.dtype, device: str = "cuda") -> Case:
    """Forward at T tokens with fast gates (c reaches ~-1e5) against the banded float64 reference."""
    gen = torch.Generator(device=device).manual_seed(1)
    q, k, v = (torch.randn(1, T, H, D, device=device, generator=gen).to(dtype) for _ in range(3))
    g = F.logsigmoid(-1.3 + 0.5 * torch.randn(1, T, H, device=device, generator=gen)).float()
    start = time.perf_counter()
    o, stats = foxacp.forgetting_attention(q, k, v, g, backend="triton", return_stats=True)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    c = g[0].double().cumsum(0)
    ref = banded_reference(q[0].double(), k[0].double(), v[0].double(), c, D**-0.5, window=256)
    name = str(dtype).removeprefix("torch.")
    return Case(name, D, f"1x{T}/{T} fwd", f"{H}/{H}", -10.0, err_o=rel_err(o[0], ref), flop_saving=stats.flop_saving,
                seconds=seconds)  # fmt: skip


def check_huge(T: int = 2**21 + 1000, H: int = 16, D: int = 64, window: int = 4096, band: int = 256) -> Case:
    """More than 2^31 elements per tensor (32-bit offsets would wrap): forward and backward on the full
    tensor, then the last ``window`` query rows against float64 on the key slice they can see. Fast gates
    (weights beyond ``band`` keys are below e^-300) make the slice reference exact."""
    gen = torch.Generator(device="cuda").manual_seed(2)
    q, k, v = (torch.randn(1, T, H, D, device="cuda", generator=gen, dtype=torch.bfloat16) for _ in range(3))
    g = F.logsigmoid(-1.3 + 0.5 * torch.randn(1, T, H, device="cuda", generator=gen)).float()
    do = torch.zeros_like(q)
    do[:, T - window :] = torch.randn(1, window, H, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    start = time.perf_counter()
    leaves = [t.requires_grad_() for t in (q, k, v, g)]
    o, stats = foxacp.forgetting_attention(*leaves, backend="triton", return_stats=True)
    o.backward(do)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    lo = T - window - band
    o_ref, grads_ref = float64_reference([t.detach()[:, lo:] for t in leaves], do[:, lo:], log_eps=None)
    w = slice(band, None)  # rows whose keys all lie in the slice
    errs = [rel_err(o[:, T - window :], o_ref[:, w])]
    errs += [rel_err(a.grad[:, lo:][:, w], b[:, w]) for a, b in zip(leaves, grads_ref, strict=True)]
    return Case("bfloat16", D, f"1x{T}/{T} (>2^31 elements)", f"{H}/{H}", -10.0, *errs, stats.flop_saving, seconds)


# The aten ops that read a tensor back to the host (a synchronisation).
HOST_READS = {"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::nonzero", "aten::equal"}


class CountOps(TorchDispatchMode):
    """Counts the aten ops dispatched while active, by schema name (a CUDA graph replay counts as none)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func._schema.name] += 1
        return func(*args, **(kwargs or {}))

    def host_reads(self) -> int:
        """How many of the counted ops read back to the host."""
        return sum(self.ops[name] for name in HOST_READS)
