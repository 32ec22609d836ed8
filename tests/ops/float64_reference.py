"""An independent float64 dense reference for forgetting attention, written from docs/method.md section 1.

o_i = sum_{j <= p_i} softmax_j(sm_scale * q_i . k_j + D_ij) v_j, D_ij = sum_{l=j+1..p_i} log f_l, queries
aligned to the end of the keys (p_i = i + Tk - Tq), GQA (query head h uses KV head h // group), packed
sequences restart the gate and never see each other. Nothing from foxacp is used here.
"""

from __future__ import annotations

import math

import torch

FLOOR = -1.0e6  # method: -inf is an exact reset; raising it to -1e6 changes no float64 weight (e^-1e6 = 0)


def dense_f64(q, k, v, log_fgate, sm_scale=None, cu_seqlens=None):
    """q (B, Tq, Hq, D), k/v (B, Tk, Hkv, D), log_fgate (B, Tk, Hq) -> (B, Tq, Hq, D) float64.

    Differentiable (autograd in float64) in all four inputs when they require grad (they are cast here).
    """
    B, Tq, Hq, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    group = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    q, k, v = q.double(), k.double(), v.double()
    g = log_fgate.double().clamp_min(FLOOR)
    if cu_seqlens is None:
        spans = [(b, 0, Tk) for b in range(B)]
    else:
        cu = [int(x) for x in cu_seqlens]
        spans = [(0, a, e) for a, e in zip(cu, cu[1:], strict=False)]
    outs = {}
    for b, a, e in spans:
        L = e - a
        if cu_seqlens is None:
            qs = q[b]
        else:
            qs = q[b, a:e]
        ks = k[b, a:e].repeat_interleave(group, dim=1)
        vs = v[b, a:e].repeat_interleave(group, dim=1)
        gs = g[b, a:e]  # (L, Hq)
        c = torch.cumsum(gs, 0)  # (L, Hq)
        lq = qs.shape[0]
        pos = torch.arange(lq) + (L - lq)
        decay = c[pos].t()[:, :, None] - c.t()[:, None, :]  # (Hq, lq, L)
        s = torch.einsum("ihd,jhd->hij", qs, ks) * scale + decay
        mask = torch.arange(L)[None, :] <= pos[:, None]
        s = s.masked_fill(~mask, -math.inf)
        p = torch.softmax(s, -1)
        outs[(b, a)] = torch.einsum("hij,jhd->ihd", p, vs)
    if cu_seqlens is None:
        return torch.stack([outs[(b, 0)] for b in range(B)])
    return torch.cat([outs[(0, a)] for _, a, _ in spans])[None]


def vmax_per_row(v, Hq, cu_seqlens=None, Tq=None):
    """max_j ||v_j|| over each (sequence, KV head), broadcast to (B, Tq, Hq) query rows."""
    B, Tk, Hkv, D = v.shape
    group = Hq // Hkv
    n = v.double().norm(dim=-1)  # (B, Tk, Hkv)
    if cu_seqlens is None:
        m = n.amax(1).repeat_interleave(group, dim=1)  # (B, Hq)
        return m[:, None, :].expand(B, Tq if Tq is not None else Tk, Hq)
    cu = [int(x) for x in cu_seqlens]
    rows = []
    for a, e in zip(cu, cu[1:], strict=False):
        m = n[0, a:e].amax(0).repeat_interleave(group)  # (Hq,)
        rows.append(m[None, :].expand(e - a, Hq))
    return torch.cat(rows)[None]


def bound_ratio(o, o_exact, v, log_eps, cu_seqlens=None):
    """max over rows of ||o - o_exact|| / (2 eps max_j ||v_j||): <= 1 is the guarantee."""
    Hq = o.shape[2]
    diff = (o.double() - o_exact.double()).norm(dim=-1)
    vm = vmax_per_row(v, Hq, cu_seqlens, o.shape[1])
    return (diff / (2 * math.exp(log_eps) * vm)).max().item()
