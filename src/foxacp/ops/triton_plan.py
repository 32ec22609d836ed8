"""ACP on the GPU in three launches: max row norms of q and k (for the data bound U), then every tile
boundary of every (sequence, head) in one kernel. ``acp.plan_tiles`` is the PyTorch twin; both compare
-c_end < delta - c_row in float64, so they find the same boundaries.
"""
# fmt: off

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from .validate import Problem


@triton.jit
def max_norm_kernel(X, CU, OUT, stride_t, stride_h, stride_d, D, H: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_T: tl.constexpr):
    """OUT[seq, h] = max over the sequence's rows of ||X[row, h, :D]|| (OUT starts at zero); BLOCK_D >= D."""
    seq = tl.program_id(1) // H
    h = tl.program_id(1) % H
    start = tl.load(CU + seq)
    length = tl.load(CU + seq + 1) - start
    t0 = tl.program_id(0) * BLOCK_T
    if t0 >= length:
        return
    in_t = tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    Xb = X + (start + t0).to(tl.int64) * stride_t + h * stride_h  # 64-bit block base, 32-bit in-block offsets
    x = tl.load(Xb + in_t[:, None] * stride_t + offs_d[None, :] * stride_d,
                mask=(t0 + in_t < length)[:, None] & (offs_d < D)[None, :], other=0.0)
    x = x.to(tl.float32)
    norm = tl.sqrt(tl.sum(x * x, 1))
    tl.atomic_max(OUT + seq * H + h, tl.max(norm, 0))


@triton.jit
def tile_plan_kernel(C, DELTA, CU_Q, CU_K, KV_LO, Q_HI, stride_ch, num_m, num_n,
                     H: tl.constexpr, TILE_M: tl.constexpr, TILE_N: tl.constexpr, CHUNK: tl.constexpr):
    """KV_LO[seq, h, m]: first kept key tile of query tile m; Q_HI[seq, h, n]: query tiles keeping key tile n."""
    seq = tl.program_id(0) // H
    h = tl.program_id(0) % H
    q_len = tl.load(CU_Q + seq + 1) - tl.load(CU_Q + seq)
    k_start = tl.load(CU_K + seq)
    k_len = tl.load(CU_K + seq + 1) - k_start
    off = k_len - q_len
    delta = tl.load(DELTA + seq * H + h)
    Cb = C + h.to(tl.int64) * stride_ch + k_start
    out = (seq * H + h).to(tl.int64)
    ar = tl.arange(0, CHUNK)
    for m0 in range(0, num_m, CHUNK):
        m = m0 + ar
        row_ok = m * TILE_M < q_len
        thresh = delta - tl.load(Cb + tl.minimum(m * TILE_M + off, k_len - 1), mask=row_ok, other=0.0)
        count = tl.zeros([CHUNK], dtype=tl.int32)
        for n0 in range(0, num_n, CHUNK):
            n = n0 + ar
            col_ok = n * TILE_N < k_len
            neg_end = -tl.load(Cb + tl.minimum((n + 1) * TILE_N, k_len) - 1, mask=col_ok, other=0.0)
            pruned = (neg_end[None, :] < thresh[:, None]) & col_ok[None, :]
            count += tl.sum(pruned.to(tl.int32), 1)
        tl.store(KV_LO + out * num_m + m, tl.where(row_ok, count, num_n), mask=m < num_m)
    for n0 in range(0, num_n, CHUNK):
        n = n0 + ar
        col_ok = n * TILE_N < k_len
        neg_end = -tl.load(Cb + tl.minimum((n + 1) * TILE_N, k_len) - 1, mask=col_ok, other=0.0)
        count = tl.zeros([CHUNK], dtype=tl.int32)
        for m0 in range(0, num_m, CHUNK):
            m = m0 + ar
            row_ok = m * TILE_M < q_len
            thresh = delta - tl.load(Cb + tl.minimum(m * TILE_M + off, k_len - 1), mask=row_ok, other=0.0)
            kept = (neg_end[:, None] >= thresh[None, :]) & row_ok[None, :]
            count += tl.sum(kept.to(tl.int32), 1)
        tl.store(Q_HI + out * num_n + n, tl.where(col_ok, count, 0), mask=n < num_n)


def max_norms(x: Tensor, cu: Tensor, num_seqs: int, max_len: int) -> Tensor:
    """(total, H, D) -> (N, H) float32: the largest row norm of each sequence and head. Any strides and any D (a
    D that is not a power of two is padded to one in the kernel, masked)."""
    out = torch.zeros(num_seqs, x.shape[1], dtype=torch.float32, device=x.device)
    block_d = triton.next_power_of_2(x.shape[2])
    block_t = max(16, min(128, 8192 // block_d))
    grid = (math.ceil(max_len / block_t), num_seqs * x.shape[1])
    max_norm_kernel[grid](x, cu, out, x.stride(0), x.stride(1), x.stride(2), x.shape[2], H=x.shape[1],
                          BLOCK_D=block_d, BLOCK_T=block_t)
    return out


def tile_plan(c_t: Tensor, delta: Tensor, problem: Problem, tile_m: int, tile_n: int) -> tuple[Tensor, Tensor]:
    """The Triton twin of ``acp.plan_tiles`` (boundaries only). c_t (Hq, total_k) float64, delta (N, Hq)."""
    n, h = problem.num_seqs, problem.n_heads
    num_m, num_n = math.ceil(problem.max_q / tile_m), math.ceil(problem.max_k / tile_n)
    kv_lo = torch.empty(n, h, num_m, dtype=torch.int32, device=c_t.device)
    q_hi = torch.empty(n, h, num_n, dtype=torch.int32, device=c_t.device)
    tile_plan_kernel[(n * h,)](c_t, delta.contiguous(), problem.cu_q, problem.cu_k, kv_lo, q_hi, c_t.stride(0),
                               num_m, num_n, H=h, TILE_M=tile_m, TILE_N=tile_n, CHUNK=64)
    return kv_lo, q_hi
