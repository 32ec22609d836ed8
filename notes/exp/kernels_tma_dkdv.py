"""EXPERIMENT (notes/kernels.md #14): the dK/dV kernel reading Q and dO through tensor descriptors (TMA)."""
# fmt: off

import triton
import triton.language as tl

from foxacp.ops.triton_kernels import LOG2E, _program


@triton.jit
def _dkdv_inner(dk, dv, dck, k, v, ck, offs_n, desc_q, desc_do, q_row, q_col, LSEb, DELTAb, Cqb, c_ref, q_len, off,
                lo, hi, qk_scale, BLOCK_M: tl.constexpr, MASKED: tl.constexpr):
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < q_len
        q = desc_q.load([q_row + start_m, q_col])
        do = desc_do.load([q_row + start_m, q_col])
        lse = tl.load(LSEb + offs_m, mask=row_ok, other=float("inf"))
        delta = tl.load(DELTAb + offs_m, mask=row_ok, other=0.0)
        cq = (tl.load(Cqb + offs_m, mask=row_ok, other=0.0) - c_ref).to(tl.float32) * LOG2E
        sT = tl.dot(k, q.T) * qk_scale + (cq - lse)[None, :] - ck[:, None]  # already minus the row's LSE
        if MASKED:
            sT = tl.where(offs_n[:, None] <= (offs_m + off)[None, :], sT, float("-inf"))
        pT = tl.math.exp2(sT)
        dv = tl.dot(pT.to(do.dtype), do, dv)
        dpT = tl.dot(v, do.T)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(q.dtype), q, dk)
        dck += tl.sum(dsT, 1)
    return dk, dv, dck


@triton.jit
def dkdv_kernel(desc_q, K, V, C, desc_do, LSE, DELTA, DK, DV, DCK, Q_HI, CU_Q, CU_K, num_sh,
                stride_kt, stride_kh, stride_vt, stride_vh, stride_dkt, stride_dkh, stride_dvt, stride_dvh,
                stride_ch, stride_lh, stride_hi_n, stride_hi_h, qk_scale, sm_scale,
                HKV: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILE_M: tl.constexpr, TILE_N: tl.constexpr,
                ACP: tl.constexpr):
    seq, kvh, n = _program(num_sh, HKV)
    if seq < 0:
        return
    k_start = tl.load(CU_K + seq)
    k_len = tl.load(CU_K + seq + 1) - k_start
    n0 = n * BLOCK_N
    if n0 >= k_len:
        return
    q_start = tl.load(CU_Q + seq)
    q_len = tl.load(CU_Q + seq + 1) - q_start
    off = k_len - q_len

    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    key_ok = offs_n < k_len
    key0 = (k_start + n0).to(tl.int64)  # 64-bit block base; in-block offsets stay 32-bit
    in_n = tl.arange(0, BLOCK_N)
    k = tl.load(K + key0 * stride_kt + kvh * stride_kh + in_n[:, None] * stride_kt + offs_d[None, :],
                mask=key_ok[:, None], other=0.0)
    v = tl.load(V + key0 * stride_vt + kvh * stride_vh + in_n[:, None] * stride_vt + offs_d[None, :],
                mask=key_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    # Rows that see some key of the block start at row n0 - off; from row n0 + BLOCK_N - 1 - off on,
    # they see all of it.
    q_lo = (tl.maximum(n0 - off, 0) // BLOCK_M) * BLOCK_M
    q_full = tl.cdiv(tl.maximum(n0 + BLOCK_N - 1 - off, 0), BLOCK_M) * BLOCK_M
    for g in range(GROUP):
        h = kvh * GROUP + g
        Cb = C + h.to(tl.int64) * stride_ch + k_start
        c_ref = tl.load(Cb + n0)
        ck = (tl.load(Cb + offs_n, mask=key_ok, other=0.0) - c_ref).to(tl.float32) * LOG2E
        q_end = q_len
        if ACP:
            q_end = tl.minimum(q_len, tl.load(Q_HI + seq * stride_hi_n + h * stride_hi_h + n0 // TILE_N) * TILE_M)
        LSEb = LSE + h.to(tl.int64) * stride_lh + q_start
        DELTAb = DELTA + h.to(tl.int64) * stride_lh + q_start
        dck = tl.zeros([BLOCK_N], dtype=tl.float32)
        dk, dv, dck = _dkdv_inner(dk, dv, dck, k, v, ck, offs_n, desc_q, desc_do, q_start, h * HEAD_DIM, LSEb,
                                  DELTAb, Cb + off, c_ref, q_len, off, q_lo, tl.minimum(q_full, q_end), qk_scale,
                                  BLOCK_M, True)
        dk, dv, dck = _dkdv_inner(dk, dv, dck, k, v, ck, offs_n, desc_q, desc_do, q_start, h * HEAD_DIM, LSEb,
                                  DELTAb, Cb + off, c_ref, q_len, off, q_full, q_end, qk_scale,
                                  BLOCK_M, False)
        tl.store(DCK + h.to(tl.int64) * stride_ch + k_start + offs_n, dck, mask=key_ok)
    tl.store(DK + key0 * stride_dkt + kvh * stride_dkh + in_n[:, None] * stride_dkt + offs_d[None, :],
             (dk * sm_scale).to(DK.dtype.element_ty), mask=key_ok[:, None])
    tl.store(DV + key0 * stride_dvt + kvh * stride_dvh + in_n[:, None] * stride_dvt + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=key_ok[:, None])
