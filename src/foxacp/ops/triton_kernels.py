"""Triton kernels for forgetting attention: forward, dK/dV and dQ, FlashAttention style, with ACP.

Conventions shared by the three kernels:
- Packed layout: q/o/do (total_q, Hq, D), k/v (total_k, Hkv, D); sequence ``seq`` owns query rows
  CU_Q[seq]:CU_Q[seq+1] and key rows CU_K[seq]:CU_K[seq+1]; query i sits at key position i + (Lk - Lq).
- Streamed blocks (K, V and KC in the forward and dQ; Q, dO and QC in dK/dV) and the forward's query block
  come through tensor descriptors: the bulk copy engine (TMA) reads (rows, D) blocks of the (total, H * D)
  matrix, with no per-thread addresses. Rows past the end read as zeros; rows of a neighbouring packed
  sequence are read and then masked.
- Pointer loads (the other per-program blocks) use a 64-bit base per program and 32-bit in-block offsets, so
  tensors beyond 2^31 elements are still addressed correctly.
- A uniform batch (every sequence as long) passes its lengths to the forward and dK/dV (``_bounds``), which
  then address their first tiles without waiting for the offsets CU_Q/CU_K.
- Grids are (heads per group, blocks, groups), see ``_program``: heaviest blocks first, a few heads at a
  time so their streamed blocks are re-read from L2.
- C is the float64 cumulative gate, (Hq, total_k). Each program subtracts one float64 reference value
  (its block's first row or key) before dropping to float32, so D = cq - ck is a difference of small numbers.
- Scores live in the log2 domain: s = (sm_scale * q.k + D) * log2(e); LSE is stored in log2 units.
- The per-score part of D comes through the tensor cores. Score tables (``table_rows``) hold, in q.k units
  and as three fp16 parts: KC, each key's decay below the first key of its KC block (columns 0-2; 3-5 are
  ones), and QC, each query's gate above the first row of its block minus its LSE (columns 3-5; 0-2 are
  ones). So ``tl.dot(QC, KC^T, q.k)`` is q.k plus the whole score but for a per-tile scalar (the first
  query's gate above the first key), and each score costs one FMA as in dense attention. The forward, which
  has no LSE yet, multiplies KC by ones in columns 0-2 only; it builds KC once and the backward reuses it.
  Rounding is 2^-24 of the gate's change across a block. dQ and dK/dV form the same products in the same
  order, so their scores agree: the gate gradient sums dS over rows in dQ and over columns in dK/dV, and only
  agreeing scores let those sums cancel.
- Keys visible to every row of the block need no mask and no bounds checks: the backward kernels loop over
  them apart from the masked blocks along the diagonal; the forward masks behind a branch in one loop.
- ACP: KV_LO[seq, h, tile] is the first kept key tile of a query tile and Q_HI[seq, h, tile] the number of
  query tiles that keep a key tile; kernel blocks divide the tiles, so a block is kept or pruned whole.
- The dK/dV kernel computes transposed scores (k @ q^T) directly: no tl.dot result is ever transposed
  (Triton 3.4-3.7.0 miscompiles that on Hopper).
"""
# fmt: off

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
KC_COLS = tl.constexpr(16)  # columns of a score table: 3 fp16 parts, 3 ones, zeros (one MMA step)
TABLE_LIMIT = tl.constexpr(3.0e4)  # fp16 holds it; as a decay in q.k units it gives weights of exactly 0 in any float


@triton.jit
def _program(num_sh, H: tl.constexpr):
    """(sequence, head, block index) of this program, or sequence -1 for a padding program.

    The grid is (heads per group, blocks, groups) over the num_sh = sequences x heads pairs: CUDA starts
    programs x-fastest, so a group's heads run side by side, block by block. Blocks are numbered heaviest
    first by the caller; a group small enough that its K/V (or Q/dO) stays in L2 keeps re-reads there.
    """
    sh = tl.program_id(2) * tl.num_programs(0) + tl.program_id(0)
    seq = tl.where(sh < num_sh, sh // H, -1)
    return seq, sh % H, tl.program_id(1)


@triton.jit
def _bounds(CU_Q, CU_K, seq, seq_q, seq_k, UNIFORM: tl.constexpr):
    """Query rows q_start:q_start+q_len and key rows k_start:k_start+k_len of packed sequence ``seq``.

    A uniform batch (UNIFORM: every sequence seq_q queries and seq_k keys long) needs no loads, so a program
    can address its first tiles at once instead of one memory round trip later.
    """
    if UNIFORM:
        q_start = seq * seq_q
        q_len = seq_q
        k_start = seq * seq_k
        k_len = seq_k
    else:
        q_start = tl.load(CU_Q + seq)
        k_start = tl.load(CU_K + seq)
        q_len = tl.load(CU_Q + seq + 1) - q_start
        k_len = tl.load(CU_K + seq + 1) - k_start
    return q_start, q_len, k_start, k_len


@triton.jit
def _query_rows(C, h, m, q_start, q_len, k_start, off, stride_ch, BLOCK_M: tl.constexpr):
    """Query block m of head h (forward and dQ): its rows and their gate cq relative to c_ref.

    Returns offs_m (row indices), row_ok, pos (key position of each row), row0 (64-bit first row), in_m,
    Cb (this head's gate row for the sequence), c_ref and cq (log2 units, fp32).
    """
    offs_m = m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < q_len
    pos = offs_m + off
    row0 = (q_start + m * BLOCK_M).to(tl.int64)  # 64-bit block base; in-block offsets stay 32-bit
    in_m = tl.arange(0, BLOCK_M)
    Cb = C + h.to(tl.int64) * stride_ch + k_start
    c_ref = tl.load(Cb + m * BLOCK_M + off)
    cq = (tl.load(Cb + pos, mask=row_ok, other=0.0) - c_ref).to(tl.float32) * LOG2E
    return offs_m, row_ok, pos, row0, in_m, Cb, c_ref, cq


@triton.jit
def _rows(X, row0, h, in_m, stride_t, stride_h, HEAD_DIM: tl.constexpr):
    """Pointers to rows row0 + in_m of head h of X (total, H, D), an (len(in_m), D) block (row0 64-bit)."""
    return X + row0 * stride_t + h * stride_h + in_m[:, None] * stride_t + tl.arange(0, HEAD_DIM)[None, :]


@triton.jit
def _block(X, row0, h, in_m, row_ok, stride_t, stride_h, HEAD_DIM: tl.constexpr):
    """Rows row0 + in_m of head h of X (total, H, D), as an (len(in_m), D) block; rows not row_ok read as 0."""
    return tl.load(_rows(X, row0, h, in_m, stride_t, stride_h, HEAD_DIM), mask=row_ok[:, None], other=0.0)


@triton.jit
def _key_range(KV_LO, seq, h, m, q_len, off, stride_lo_n, stride_lo_h, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, TILE_M: tl.constexpr, TILE_N: tl.constexpr, ACP: tl.constexpr):
    """Keys a query block visits: from lo (0, or ACP's first kept tile) to hi; keys below diag are visible
    to every row of the block (the unmasked loop), the rest lie along the diagonal (the masked loop)."""
    lo = 0
    if ACP:
        lo = tl.load(KV_LO + seq * stride_lo_n + h * stride_lo_h + (m * BLOCK_M) // TILE_M) * TILE_N
    diag = ((m * BLOCK_M + off + 1) // BLOCK_N) * BLOCK_N
    hi = tl.minimum(m * BLOCK_M + BLOCK_M, q_len) + off
    return lo, diag, hi


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, ones, pos, desc_k, desc_v, desc_kc, k_row, kv_col, kc_col, Cb, c_ref, lo, diag,
               hi, qk_scale, BLOCK_N: tl.constexpr):
    # The decay enters the scores through the tensor cores: ``ones @ kc^T`` adds each key's decay below its
    # block's first key (KC's columns 0-2, in q.k units), and ``shift`` that first key's decay below
    # c_ref. Each score then costs one FMA, as in dense attention. The row's own gate term cq_i is a per-row
    # shift, which softmax ignores: it is added to the LSE at the end.
    # One loop: the mask of the diagonal blocks sits behind a block-uniform branch, so a program fills its
    # load pipeline once (two loops, unmasked then masked, were 2-4% slower: notes #27).
    for start_n in range(lo, hi, BLOCK_N):
        k = desc_k.load([k_row + start_n, kv_col])
        v = desc_v.load([k_row + start_n, kv_col])
        kc = desc_kc.load([k_row + start_n, kc_col])
        shift = (c_ref - tl.load(Cb + start_n)).to(tl.float32) * LOG2E
        s = tl.dot(ones, kc.T, tl.dot(q, k.T))
        if start_n >= diag:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            s = tl.where(offs_n[None, :] <= pos[:, None], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale + shift)
        p = tl.math.exp2(s * qk_scale + (shift - m_new)[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def fwd_kernel(desc_q, desc_k, desc_v, desc_kc, C, O, LSE, KV_LO, CU_Q, CU_K, num_sh,
               stride_ot, stride_oh, stride_ch, stride_lh, stride_lo_n, stride_lo_h, qk_scale,
               seq_q, seq_k,
               H: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILE_M: tl.constexpr, TILE_N: tl.constexpr,
               ACP: tl.constexpr, UNIFORM: tl.constexpr):
    # Last query blocks first: along the causal diagonal they carry the most work.
    seq, h, m = _program(num_sh, H)
    m = tl.num_programs(1) - 1 - m
    if seq < 0:
        return
    q_start, q_len, k_start, k_len = _bounds(CU_Q, CU_K, seq, seq_q, seq_k, UNIFORM)
    if m * BLOCK_M >= q_len:
        return
    off = k_len - q_len
    offs_m, row_ok, pos, row0, in_m, Cb, c_ref, cq = _query_rows(C, h, m, q_start, q_len, k_start, off, stride_ch,
                                                                 BLOCK_M)
    lo, diag, hi = _key_range(KV_LO, seq, h, m, q_len, off, stride_lo_n, stride_lo_h, BLOCK_M, BLOCK_N, TILE_M,
                              TILE_N, ACP)
    # The copy engine reads the query block (rows past the sequence are masked at the stores): measured
    # -1% on the forward kernel against pointer loads (notes #42). The program waits for it here, so the plan's
    # load above is issued first and its latency overlaps this one (notes #43).
    q = desc_q.load([q_start + m * BLOCK_M, h * HEAD_DIM])

    kv_col = (h // GROUP) * HEAD_DIM
    kc_col = h * KC_COLS
    ones = tl.zeros([BLOCK_M, KC_COLS], dtype=tl.float16) + (tl.arange(0, KC_COLS) < 3).to(tl.float16)[None, :]
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, ones, pos, desc_k, desc_v, desc_kc, k_start, kv_col, kc_col, Cb,
                               c_ref, lo, diag, hi, qk_scale, BLOCK_N)
    o = acc * (1.0 / l_i)[:, None]  # one division per row, not per element: -88 instructions per thread (notes #44)
    tl.store(_rows(O, row0, h, in_m, stride_ot, stride_oh, HEAD_DIM), o.to(O.dtype.element_ty), mask=row_ok[:, None])
    tl.store(LSE + h.to(tl.int64) * stride_lh + q_start + offs_m, m_i + tl.math.log2(l_i) + cq, mask=row_ok)


@triton.jit
def _dkdv_inner(dk, dv, dck, k, v, kc, offs_n, desc_q, desc_do, desc_qc, q_row, q_col, qc_col, DELTAb, Cqb, c_ref,
                q_len, off, lo, hi, qk_scale, BLOCK_M: tl.constexpr, QC_BLOCK: tl.constexpr, MASKED: tl.constexpr):
    # Every query row of an unmasked block is a row of the sequence that sees every key of the block.
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = desc_q.load([q_row + start_m, q_col])
        do = desc_do.load([q_row + start_m, q_col])
        qc = desc_qc.load([q_row + start_m, qc_col])
        if MASKED:
            delta = tl.load(DELTAb + offs_m, mask=offs_m < q_len, other=0.0)
        else:
            delta = tl.load(DELTAb + offs_m)
        # dQ's scores, transposed: the tables' first key and first query (of QC's and KC's blocks) fix the scalar.
        shift = (tl.load(Cqb + (start_m // QC_BLOCK) * QC_BLOCK) - c_ref).to(tl.float32) * LOG2E
        sT = tl.dot(kc, qc.T, tl.dot(k, q.T)) * qk_scale + shift
        if MASKED:
            sT = tl.where((offs_n[:, None] <= (offs_m + off)[None, :]) & (offs_m < q_len)[None, :], sT,
                          float("-inf"))
        pT = tl.math.exp2(sT)
        dv = tl.dot(pT.to(do.dtype), do, dv)
        dpT = tl.dot(v, do.T)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(q.dtype), q, dk)
        dck += tl.sum(dsT, 1)
    return dk, dv, dck


@triton.jit
def dkdv_kernel(desc_q, K, V, KC, C, desc_do, desc_qc, DELTA, DK, DV, DCK, Q_HI, CU_Q, CU_K, num_sh,
                stride_kt, stride_kh, stride_vt, stride_vh, stride_kct, stride_dkt, stride_dkh, stride_dvt, stride_dvh,
                stride_ch, stride_lh, stride_hi_n, stride_hi_h, qk_scale, sm_scale, seq_q, seq_k,
                HKV: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILE_M: tl.constexpr, TILE_N: tl.constexpr,
                ACP: tl.constexpr, QC_BLOCK: tl.constexpr, KC_BLOCK: tl.constexpr,
                UNIFORM: tl.constexpr):
    # QC_BLOCK, KC_BLOCK: the tables' blocks (dQ's rows, the forward's keys), multiples of BLOCK_M and BLOCK_N.
    seq, kvh, n = _program(num_sh, HKV)
    if seq < 0:
        return
    q_start, q_len, k_start, k_len = _bounds(CU_Q, CU_K, seq, seq_q, seq_k, UNIFORM)
    n0 = n * BLOCK_N
    if n0 >= k_len:
        return
    off = k_len - q_len

    offs_n = n0 + tl.arange(0, BLOCK_N)
    key_ok = offs_n < k_len
    key0 = (k_start + n0).to(tl.int64)  # 64-bit block base; in-block offsets stay 32-bit
    in_n = tl.arange(0, BLOCK_N)
    k = _block(K, key0, kvh, in_n, key_ok, stride_kt, stride_kh, HEAD_DIM)
    v = _block(V, key0, kvh, in_n, key_ok, stride_vt, stride_vh, HEAD_DIM)
    cols = tl.arange(0, KC_COLS)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    # Rows that see some key of the block start at row n0 - off; from row n0 + BLOCK_N - 1 - off on,
    # they see all of it. Blocks below q_whole hold rows of the sequence only.
    q_lo = (tl.maximum(n0 - off, 0) // BLOCK_M) * BLOCK_M
    q_full = tl.cdiv(tl.maximum(n0 + BLOCK_N - 1 - off, 0), BLOCK_M) * BLOCK_M
    for g in range(GROUP):
        h = kvh * GROUP + g
        Cb = C + h.to(tl.int64) * stride_ch + k_start
        c_ref = tl.load(Cb + (n0 // KC_BLOCK) * KC_BLOCK)
        kc = tl.load(KC + key0 * stride_kct + h * KC_COLS + in_n[:, None] * stride_kct + cols[None, :],
                     mask=key_ok[:, None], other=0.0)
        q_end = q_len
        if ACP:
            q_end = tl.minimum(q_len, tl.load(Q_HI + seq * stride_hi_n + h * stride_hi_h + n0 // TILE_N) * TILE_M)
        q_whole = (q_end // BLOCK_M) * BLOCK_M
        DELTAb = DELTA + h.to(tl.int64) * stride_lh + q_start
        dck = tl.zeros([BLOCK_N], dtype=tl.float32)
        q_col = h * HEAD_DIM
        qc_col = h * KC_COLS
        # ACP keeps every tile that holds a causal pair (its largest decay is >= 0 > delta), so q_end >= q_full
        # or q_end = q_len: the diagonal loop's bounds need not wait for the Q_HI load.
        dk, dv, dck = _dkdv_inner(dk, dv, dck, k, v, kc, offs_n, desc_q, desc_do, desc_qc, q_start, q_col, qc_col,
                                  DELTAb, Cb + off, c_ref, q_len, off, q_lo, tl.minimum(q_full, q_len), qk_scale,
                                  BLOCK_M, QC_BLOCK, True)
        dk, dv, dck = _dkdv_inner(dk, dv, dck, k, v, kc, offs_n, desc_q, desc_do, desc_qc, q_start, q_col, qc_col,
                                  DELTAb, Cb + off, c_ref, q_len, off, q_full, q_whole, qk_scale, BLOCK_M, QC_BLOCK,
                                  False)
        dk, dv, dck = _dkdv_inner(dk, dv, dck, k, v, kc, offs_n, desc_q, desc_do, desc_qc, q_start, q_col, qc_col,
                                  DELTAb, Cb + off, c_ref, q_len, off, tl.maximum(q_full, q_whole), q_end, qk_scale,
                                  BLOCK_M, QC_BLOCK, True)
        tl.store(DCK + h.to(tl.int64) * stride_ch + k_start + offs_n, dck, mask=key_ok)
    tl.store(_rows(DK, key0, kvh, in_n, stride_dkt, stride_dkh, HEAD_DIM), (dk * sm_scale).to(DK.dtype.element_ty),
             mask=key_ok[:, None])
    tl.store(_rows(DV, key0, kvh, in_n, stride_dvt, stride_dvh, HEAD_DIM), dv.to(DV.dtype.element_ty),
             mask=key_ok[:, None])


@triton.jit
def _dq_inner(dq, dcq, q, do, qc, delta, pos, desc_k, desc_v, desc_kc, k_row, kv_col, kc_col, Cb, c_ref, lo, diag, hi,
              qk_scale, BLOCK_N: tl.constexpr, KC_BLOCK: tl.constexpr):
    # One loop, the diagonal mask behind a block-uniform branch, as in the forward: one pipeline fill per
    # program (notes #34; two loops cost a second fill in the short programs of pruned rows). Keys past the
    # end of the sequence only occur in the masked blocks, where causality masks them: their tiles (a
    # neighbouring sequence's rows, or zeros past the tensor) get p = 0, as in the forward.
    for start_n in range(lo, hi, BLOCK_N):
        k = desc_k.load([k_row + start_n, kv_col])
        v = desc_v.load([k_row + start_n, kv_col])
        kc = desc_kc.load([k_row + start_n, kc_col])
        shift = (c_ref - tl.load(Cb + (start_n // KC_BLOCK) * KC_BLOCK)).to(tl.float32) * LOG2E
        # q.k plus the score but for the scalar shift (the block's first row's gate above KC's first key)
        s = tl.dot(qc, kc.T, tl.dot(q, k.T)) * qk_scale + shift
        if start_n >= diag:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            s = tl.where(offs_n[None, :] <= pos[:, None], s, float("-inf"))
        p = tl.math.exp2(s)
        dp = tl.dot(do, v.T)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq)
        dcq += tl.sum(ds, 1)
    return dq, dcq


@triton.jit
def dq_kernel(Q, desc_k, desc_v, QC, desc_kc, C, O, DO, DELTA, DQ, DCQ, KV_LO, CU_Q, CU_K, num_sh,
              stride_qt, stride_qh, stride_qct, stride_ot, stride_oh, stride_dot, stride_doh, stride_dqt, stride_dqh,
              stride_ch, stride_lh, stride_lo_n, stride_lo_h, qk_scale, sm_scale,
              H: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILE_M: tl.constexpr, TILE_N: tl.constexpr,
              ACP: tl.constexpr, KC_BLOCK: tl.constexpr):
    # Runs before dK/dV: it computes each row's softmax correction delta = rowsum(dO * O) and stores it there.
    # KC_BLOCK: KC's blocks (the forward's), a multiple of BLOCK_N. Bounds come from the offsets even in a
    # uniform batch: measured faster here (ACP 0.79 vs 0.82 ms at 24x64 4k, notes/kernels.md #31; exact 1.36 vs 1.40
    # at #36).
    seq, h, m = _program(num_sh, H)  # as in fwd_kernel: longest rows first
    m = tl.num_programs(1) - 1 - m
    if seq < 0:
        return
    q_start, q_len, k_start, k_len = _bounds(CU_Q, CU_K, seq, 0, 0, False)
    if m * BLOCK_M >= q_len:
        return
    off = k_len - q_len
    offs_m, row_ok, pos, row0, in_m, Cb, c_ref, cq = _query_rows(C, h, m, q_start, q_len, k_start, off, stride_ch,
                                                                 BLOCK_M)
    q = _block(Q, row0, h, in_m, row_ok, stride_qt, stride_qh, HEAD_DIM)
    do = _block(DO, row0, h, in_m, row_ok, stride_dot, stride_doh, HEAD_DIM)
    o = _block(O, row0, h, in_m, row_ok, stride_ot, stride_oh, HEAD_DIM)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + h.to(tl.int64) * stride_lh + q_start + offs_m, delta, mask=row_ok)
    lo, diag, hi = _key_range(KV_LO, seq, h, m, q_len, off, stride_lo_n, stride_lo_h, BLOCK_M, BLOCK_N, TILE_M,
                              TILE_N, ACP)
    qc = tl.load(QC + row0 * stride_qct + h * KC_COLS + in_m[:, None] * stride_qct + tl.arange(0, KC_COLS)[None, :],
                 mask=row_ok[:, None], other=0.0)
    kv_col = (h // GROUP) * HEAD_DIM
    kc_col = h * KC_COLS
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    dcq = tl.zeros([BLOCK_M], dtype=tl.float32)
    dq, dcq = _dq_inner(dq, dcq, q, do, qc, delta, pos, desc_k, desc_v, desc_kc, k_start, kv_col, kc_col, Cb, c_ref,
                        lo, diag, hi, qk_scale, BLOCK_N, KC_BLOCK)
    tl.store(_rows(DQ, row0, h, in_m, stride_dqt, stride_dqh, HEAD_DIM), (dq * sm_scale).to(DQ.dtype.element_ty),
             mask=row_ok[:, None])
    tl.store(DCQ + h.to(tl.int64) * stride_lh + q_start + offs_m, dcq, mask=row_ok)


@triton.jit
def table_rows(x, QUERY: tl.constexpr):
    """(N,) float64 values in q.k units -> (N, KC_COLS) fp16 rows of a score table.

    x is clamped to +-TABLE_LIMIT and split into three fp16 parts whose float32 sum is x to ~2^-24 of it; they
    fill columns 0-2 (keys: KC) or 3-5 (queries: QC), ones the other three, zeros the rest, so a QC row times
    a KC row is the sum of both values.
    """
    x = tl.minimum(tl.maximum(x, -TABLE_LIMIT), TABLE_LIMIT)
    hi = x.to(tl.float32).to(tl.float16)
    x = x - hi.to(tl.float64)
    mid = x.to(tl.float32).to(tl.float16)
    lo = (x - mid.to(tl.float64)).to(tl.float32).to(tl.float16)
    cols = tl.arange(0, KC_COLS)[None, :]
    part = cols - 3 if QUERY else cols  # 0, 1, 2: this table's parts
    ones = (cols < 3) if QUERY else (cols >= 3) & (cols < 6)
    vals = tl.where(part == 0, hi[:, None], tl.where(part == 1, mid[:, None], tl.where(part == 2, lo[:, None], 0.0)))
    return tl.where(ones, 1.0, vals).to(tl.float16)


@triton.jit
def qc_table_kernel(C, LSE, TAB, CU_Q, CU_K, stride_ch, stride_lh, stride_tt, scale, seq_q, seq_k,
                    H: tl.constexpr, BLOCK: tl.constexpr, UNIFORM: tl.constexpr):
    """The query table QC, (total_q, H, KC_COLS) fp16, for blocks of BLOCK rows (``table_rows``).

    Row i of block b (first row i0) of a sequence holds ((C[i] - C[i0]) - LSE[i] / log2(e)) * scale, the gate
    above the block's first row minus the row's LSE in q.k units (``scale`` = 1 / sm_scale), with C taken at
    the rows' key positions. (KC, the keys' table, is built by the gate scan: ``triton_gate``.)
    Grid: (sequences x H, blocks).
    """
    seq = tl.program_id(0) // H
    h = tl.program_id(0) % H
    q_start, q_len, k_start, k_len = _bounds(CU_Q, CU_K, seq, seq_q, seq_k, UNIFORM)
    b0 = tl.program_id(1) * BLOCK
    if b0 >= q_len:
        return
    p = b0 + tl.arange(0, BLOCK)
    ok = p < q_len
    Cb = C + h.to(tl.int64) * stride_ch + k_start + k_len - q_len
    c = tl.load(Cb + p, mask=ok, other=0.0)
    lse = tl.load(LSE + h.to(tl.int64) * stride_lh + q_start + p, mask=ok, other=0.0)
    x = (c - tl.load(Cb + b0)) - lse.to(tl.float64) * (1.0 / LOG2E)
    rows = (q_start + p).to(tl.int64)[:, None]
    tl.store(TAB + rows * stride_tt + h * KC_COLS + tl.arange(0, KC_COLS)[None, :], table_rows(x * scale, True),
             mask=ok[:, None])
