"""EXPERIMENT (notes/kernels.md #15): the dQ kernel reading K and V through tensor descriptors (TMA)."""
# fmt: off

import triton
import triton.language as tl

from foxacp.ops.triton_kernels import LOG2E, _program


@triton.jit
def _dq_inner(dq, dcq, q, do, row_shift, delta, pos, desc_k, desc_v, k_row, kv_col, Cb, c_ref, k_len, lo, hi,
              qk_scale, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = desc_k.load([k_row + start_n, kv_col])
        v = desc_v.load([k_row + start_n, kv_col])
        kT, vT = k.T, v.T
        if MASKED:
            ck = tl.load(Cb + offs_n, mask=offs_n < k_len, other=0.0)
        else:
            ck = tl.load(Cb + offs_n)
        ck = (ck - c_ref).to(tl.float32) * LOG2E
        s = tl.dot(q, kT) * qk_scale + row_shift[:, None] - ck[None, :]  # row_shift = cq - LSE
        if MASKED:
            s = tl.where(offs_n[None, :] <= pos[:, None], s, float("-inf"))
        p = tl.math.exp2(s)
        dp = tl.dot(do, vT)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq)
        dcq += tl.sum(ds, 1)
    return dq, dcq


@triton.jit
def dq_kernel(Q, desc_k, desc_v, C, DO, LSE, DELTA, DQ, DCQ, KV_LO, CU_Q, CU_K, num_sh,
              stride_qt, stride_qh, stride_dot, stride_doh,
              stride_dqt, stride_dqh, stride_ch, stride_lh, stride_lo_n, stride_lo_h, qk_scale, sm_scale,
              H: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILE_M: tl.constexpr, TILE_N: tl.constexpr,
              ACP: tl.constexpr):
    seq, h, m = _program(num_sh, H)  # as in fwd_kernel: longest rows first
    m = tl.num_programs(1) - 1 - m
    if seq < 0:
        return
    q_start = tl.load(CU_Q + seq)
    q_len = tl.load(CU_Q + seq + 1) - q_start
    if m * BLOCK_M >= q_len:
        return
    k_start = tl.load(CU_K + seq)
    k_len = tl.load(CU_K + seq + 1) - k_start
    off = k_len - q_len

    offs_m = m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < q_len
    pos = offs_m + off
    row0 = (q_start + m * BLOCK_M).to(tl.int64)  # 64-bit block base; in-block offsets stay 32-bit
    in_m = tl.arange(0, BLOCK_M)
    q = tl.load(Q + row0 * stride_qt + h * stride_qh + in_m[:, None] * stride_qt + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + row0 * stride_dot + h * stride_doh + in_m[:, None] * stride_dot + offs_d[None, :],
                 mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + h.to(tl.int64) * stride_lh + q_start + offs_m, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + h.to(tl.int64) * stride_lh + q_start + offs_m, mask=row_ok, other=0.0)
    Cb = C + h.to(tl.int64) * stride_ch + k_start
    c_ref = tl.load(Cb + m * BLOCK_M + off)
    cq = (tl.load(Cb + pos, mask=row_ok, other=0.0) - c_ref).to(tl.float32) * LOG2E

    lo = 0
    if ACP:
        lo = tl.load(KV_LO + seq * stride_lo_n + h * stride_lo_h + (m * BLOCK_M) // TILE_M) * TILE_N
    diag = ((m * BLOCK_M + off + 1) // BLOCK_N) * BLOCK_N
    hi = tl.minimum(m * BLOCK_M + BLOCK_M, q_len) + off

    kv_col = (h // GROUP) * HEAD_DIM
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    dcq = tl.zeros([BLOCK_M], dtype=tl.float32)
    row_shift = cq - lse
    dq, dcq = _dq_inner(dq, dcq, q, do, row_shift, delta, pos, desc_k, desc_v, k_start, kv_col, Cb, c_ref, k_len,
                        lo, diag, qk_scale, BLOCK_N, False)
    dq, dcq = _dq_inner(dq, dcq, q, do, row_shift, delta, pos, desc_k, desc_v, k_start, kv_col, Cb, c_ref, k_len,
                        tl.maximum(lo, diag), hi, qk_scale, BLOCK_N, True)
    tl.store(DQ + row0 * stride_dqt + h * stride_dqh + in_m[:, None] * stride_dqt + offs_d[None, :],
             (dq * sm_scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])
    tl.store(DCQ + h.to(tl.int64) * stride_lh + q_start + offs_m, dcq, mask=row_ok)
