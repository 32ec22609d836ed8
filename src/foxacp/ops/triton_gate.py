"""The cumulative gate and its gradient in one Triton launch each (twin: ``gate.cumulative_gate`` + autograd).

Forward: c[h, t] = sum of log f[s, h] over the sequence's keys s <= t, in float64, written heads first.
Backward: with dL/dc = dcq (query rows, at their key positions) - dck (key columns), as the attention
kernels leave them, dL/dlog f[t, h] = sum over the sequence's key positions s >= t of dL/dc[h, s].
One program per (sequence, head) walks its sequence in chunks, carrying the running sum (notes #28: this
replaced ~8 small torch launches per call, ~0.1 ms of device time and more of host time).
"""
# fmt: off

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .validate import Problem

_CHUNK = 1024


@triton.jit
def gate_scan_kernel(G, C, CU_K, stride_gt, stride_gh, stride_ch, H: tl.constexpr, CHUNK: tl.constexpr):
    """C[h, k_start + t] = sum_{s <= t} G[k_start + s, h] (float64). Grid: (sequences x H,)."""
    seq = tl.program_id(0) // H
    h = tl.program_id(0) % H
    start = tl.load(CU_K + seq)
    length = tl.load(CU_K + seq + 1) - start
    Gb = G + start.to(tl.int64) * stride_gt + h * stride_gh
    Cb = C + h.to(tl.int64) * stride_ch + start
    offs = tl.arange(0, CHUNK)
    carry = tl.sum(tl.zeros([CHUNK], dtype=tl.float64), 0)
    for t0 in range(0, length, CHUNK):
        ok = t0 + offs < length
        x = tl.load(Gb + (t0 + offs) * stride_gt, mask=ok, other=0.0).to(tl.float64)
        tl.store(Cb + t0 + offs, tl.cumsum(x, 0) + carry, mask=ok)
        carry += tl.sum(x, 0)


@triton.jit
def gate_grad_kernel(DCQ, DCK, DG, CU_Q, CU_K, stride_qh, stride_kh, stride_gt, H: tl.constexpr,
                     CHUNK: tl.constexpr):
    """DG[k_start + t, h] = sum_{s >= t} (DCQ[h, query at key position s] - DCK[h, k_start + s]), summed in
    float64, stored in DG's dtype. Query i of a sequence sits at key position i + (Lk - Lq). Grid: (sequences x H,)."""
    seq = tl.program_id(0) // H
    h = tl.program_id(0) % H
    q_start = tl.load(CU_Q + seq)
    k_start = tl.load(CU_K + seq)
    k_len = tl.load(CU_K + seq + 1) - k_start
    off = k_len - (tl.load(CU_Q + seq + 1) - q_start)
    DCQb = DCQ + h.to(tl.int64) * stride_qh + q_start - off  # indexed by key position
    DCKb = DCK + h.to(tl.int64) * stride_kh + k_start
    DGb = DG + k_start.to(tl.int64) * stride_gt + h
    offs = tl.arange(0, CHUNK)
    chunks = tl.cdiv(k_len, CHUNK)
    carry = tl.sum(tl.zeros([CHUNK], dtype=tl.float64), 0)
    for i in range(0, chunks):  # last chunk first
        s = (chunks - 1 - i) * CHUNK + offs
        ok = s < k_len
        x = tl.load(DCQb + s, mask=ok & (s >= off), other=0.0).to(tl.float64)
        x -= tl.load(DCKb + s, mask=ok, other=0.0).to(tl.float64)
        tl.store(DGb + s * stride_gt, (tl.cumsum(x, 0, reverse=True) + carry).to(DG.dtype.element_ty), mask=ok)
        carry += tl.sum(x, 0)


def gate_scan(log_fgate: Tensor, problem: Problem) -> Tensor:
    """(total_k, Hq) float32 log forget gates -> c_t (Hq, total_k) float64, restarting at every sequence."""
    total, heads = log_fgate.shape
    c_t = torch.empty(heads, total, dtype=torch.float64, device=log_fgate.device)
    gate_scan_kernel[(problem.num_seqs * heads,)](log_fgate, c_t, problem.cu_k, log_fgate.stride(0),
                                                  log_fgate.stride(1), c_t.stride(0), H=heads, CHUNK=_CHUNK)
    return c_t


def gate_grad(dcq: Tensor, dck: Tensor, problem: Problem, dtype: torch.dtype = torch.float32) -> Tensor:
    """dcq (Hq, total_q), dck (Hq, total_k) float32 -> the log forget gate's gradient (total_k, Hq) in ``dtype``."""
    heads, total = dck.shape
    dg = torch.empty(total, heads, dtype=dtype, device=dck.device)
    gate_grad_kernel[(problem.num_seqs * heads,)](dcq, dck, dg, problem.cu_q, problem.cu_k, dcq.stride(0),
                                                  dck.stride(0), dg.stride(0), H=heads, CHUNK=_CHUNK)
    return dg
