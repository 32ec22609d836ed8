"""Blockwise PyTorch forgetting attention: the readable twin of the Triton kernels and the CPU fast path.

It walks the same ACP tile grid as the kernels: for each query tile it computes only the key range the
kernels visit (from the first kept key tile to the causal end), so pruned tiles are never touched.
Autograd differentiates it, and only through the visited tiles.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .acp import AcpPlan
from .validate import Problem


def _attend_batch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    c: Tensor,
    kv_lo: Tensor | None,
    scale: float,
    tile_m: int,
    tile_n: int,
) -> Tensor:
    """Equal-length sequences: q (N, Lq, H, D); k, v (N, Lk, H, D); c (N, Lk, H) float64;
    kv_lo (N, H, num_m) on the CPU or None. Returns (N, Lq, H, D) in q's dtype."""
    lq, lk = q.shape[1], k.shape[1]
    off = lk - lq
    outs = []
    for m, i0 in enumerate(range(0, lq, tile_m)):
        i1 = min(i0 + tile_m, lq)
        hi = i1 + off
        rows = torch.arange(i0 + off, hi, device=q.device)[:, None]
        if kv_lo is None:
            lo = 0
        else:
            first_key = (kv_lo[:, :, m].long() * tile_n).to(q.device)  # (N, H)
            lo = min(int(first_key.min()), i0 + off)  # a row's own key is always kept (even on a NaN plan)
        cols = torch.arange(lo, hi, device=q.device)[None, :]
        s = torch.einsum("nihd,njhd->nhij", q[:, i0:i1], k[:, lo:hi]) * scale
        decay = c[:, i0 + off : hi].transpose(1, 2)[..., None] - c[:, lo:hi].transpose(1, 2)[:, :, None, :]
        s = s + decay.to(s.dtype)
        keep = cols <= rows
        if kv_lo is not None:
            keep = keep & (cols >= first_key[:, :, None, None])
        p = torch.softmax(s.masked_fill(~keep, -torch.inf), dim=-1)
        outs.append(torch.einsum("nhij,njhd->nihd", p, v[:, lo:hi]))
    return torch.cat(outs, dim=1)


def blockwise_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    c: Tensor,
    problem: Problem,
    plan: AcpPlan | None,
    tile_m: int,
    tile_n: int,
) -> Tensor:
    """Forgetting attention over the ACP tile grid, visiting only the kept tiles.

    Args:
        q: (total_q, Hq, D); k, v: (total_k, Hkv, D); c: (total_k, Hq) float64 cumulative gate.
        plan: the tile boundaries, or None for exact attention.
    Returns:
        (total_q, Hq, D) in q's dtype; half-precision inputs are computed in float32.
    """
    dt = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32
    g = problem.group
    q, k, v = q.to(dt), k.to(dt).repeat_interleave(g, dim=1), v.to(dt).repeat_interleave(g, dim=1)
    kv_lo = None if plan is None else plan.kv_lo.cpu()
    n = problem.num_seqs
    if problem.uniform:
        shape = lambda t: t.view(n, -1, *t.shape[1:])  # noqa: E731
        o = _attend_batch(shape(q), shape(k), shape(v), shape(c), kv_lo, problem.sm_scale, tile_m, tile_n)
        return o.reshape(-1, *o.shape[2:])
    cu_q, cu_k = problem.cu_q.tolist(), problem.cu_k.tolist()
    outs = []
    for i in range(n):
        sq, sk = slice(cu_q[i], cu_q[i + 1]), slice(cu_k[i], cu_k[i + 1])
        lo = None if kv_lo is None else kv_lo[i : i + 1]
        outs.append(
            _attend_batch(
                q[None, sq],
                k[None, sk],
                v[None, sk],
                c[None, sk],
                lo,
                problem.sm_scale,
                tile_m,
                tile_n,
            )[0]
        )
    return torch.cat(outs)
