"""Dense, materialised forgetting attention: the ground truth every other backend is tested against."""

from __future__ import annotations

import torch
from torch import Tensor

from .acp import AcpPlan
from .validate import Problem


def reference_attention(q: Tensor, k: Tensor, v: Tensor, c: Tensor, problem: Problem, plan: AcpPlan | None) -> Tensor:
    """Softmax(sm_scale * q k^T + D) v per sequence with the causal mask and, given a plan, the ACP mask.

    Args:
        q: (total_q, Hq, D); k, v: (total_k, Hkv, D); c: (total_k, Hq) float64 cumulative gate.
        plan: when given, entries the kernels prune (key tiles before kv_lo) are masked out too, so the
            reference computes exactly the function the pruned kernels compute.
    Returns:
        (total_q, Hq, D) in q's dtype; computed in float64 for float64 inputs, float32 otherwise.
    """
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    cu_q, cu_k = problem.cu_q.tolist(), problem.cu_k.tolist()
    outs = []
    for n in range(problem.num_seqs):
        qs = q[cu_q[n] : cu_q[n + 1]].to(dt)
        ks = k[cu_k[n] : cu_k[n + 1]].to(dt).repeat_interleave(problem.group, dim=1)
        vs = v[cu_k[n] : cu_k[n + 1]].to(dt).repeat_interleave(problem.group, dim=1)
        cs = c[cu_k[n] : cu_k[n + 1]].t()  # (Hq, Lk)
        lq, lk = qs.shape[0], ks.shape[0]
        decay = cs[:, lk - lq :, None] - cs[:, None, :]  # (Hq, Lq, Lk), float64
        s = torch.einsum("ihd,jhd->hij", qs, ks) * problem.sm_scale + decay.to(dt)
        rows = torch.arange(lq, device=q.device)[:, None]
        cols = torch.arange(lk, device=q.device)[None, :]
        keep = cols <= rows + (lk - lq)
        if plan is not None:
            first_key = plan.kv_lo[n].long()[:, rows[:, 0] // plan.tile_m] * plan.tile_n  # (Hq, Lq)
            keep = keep & (cols >= first_key[:, :, None])
        p = torch.softmax(s.masked_fill(~keep, -torch.inf), dim=-1)
        outs.append(torch.einsum("hij,jhd->ihd", p, vs))
    return torch.cat(outs).to(q.dtype)
