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
- C is the float64 cumulative gate, (Hq, total_k). Nothing large ever meets anything small in float32: off the
  diagonal, a score's decay is split into parts that are all <= 0 (below), so a pair that matters (a decay
  near 0) is a sum of small numbers; a pair whose decay is huge stays huge whatever the rounding.
- Scores live in the log2 domain: s = (sm_scale * q.k + D) * log2(e); LSE is stored in log2 units. The
  softmax state of a row (its running max, its LSE) is relative to the row's own gate, c[i], so it stays
  small whatever the gate did before the row.
- Off the diagonal, the per-score part of D comes through the tensor cores. Score tables (``table_rows``)
  hold, as three fp16 parts of x / S (S a power of two, ``table_scale``), in q.k units: KC, each key's
  decay up to the LAST key of its KC block, c[j1] - c[j] <= 0 (columns 0-2; 3-5 hold S), and QC, each
  query's gate below the first row of its block minus its LSE (columns 3-5; 0-2 hold S). So
  ``tl.dot(QC, KC^T, q.k)`` is q.k plus the whole score but for a per-tile scalar, the first query's gate
  below the KC block's last key (<= 0 once that key is at or before the first query). Each score then costs
  one FMA as in dense attention. The forward, which has no LSE yet, multiplies KC by S in columns 0-2 and
  adds each row's gate below the KC block's last key, a per-row value. Tables saturate at +-TABLE_LIMIT,
  which only ever shortens a decay that already gives weight 0: every part is <= 0.
- Tiles that hold keys after a row's block starts (the diagonal, and the KC block around it) have decays
  of both signs: those scores take D per element from (hi, lo) float32 splits of c relative to one
  reference, (hi_i - hi_j) + (lo_i - lo_j), accurate to float32 rounding of D itself (``_split``).
- dQ and dK/dV form the same scores in the same order, so their scores agree: the gate gradient sums dS over
  rows in dQ and over columns in dK/dV, and only agreeing scores let those sums cancel.
- Keys visible to every row of the block need no mask and no bounds checks: the backward kernels loop over
  them apart from the masked blocks along the diagonal; the forward masks behind a branch in one loop.
- ACP: KV_LO[seq, h, tile] is the first kept key tile of a query tile and Q_HI[seq, h, tile] the number of
  query tiles that keep a key tile; kernel blocks divide the tiles, so a block is kept or pruned whole.
- The dK/dV kernel computes transposed scores (k @ q^T) directly: no tl.dot result is ever transposed
  (Triton 3.4-3.7.0 miscompiles that on Hopper).
- dS = P * (dP - Delta) runs about 1 / sm_scale times larger than the dQ and dK made from it. In fp16 (largest
  65504) it is scaled by FP16_DS_SCALE, a power of two, before its cast for the dots, and the stores undo it: a
  loss-scaled fp16 step overflowed to inf there while every true gradient fit. bf16 kernels are unchanged.
"""
# fmt: off

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
KC_COLS = tl.constexpr(16)  # columns of a score table: 3 fp16 parts, 3 ones, zeros (one MMA step)
TABLE_LIMIT = tl.constexpr(3.0e4)  # largest table value x / S: fp16 holds it (see table_scale in triton_op)
FP16_DS_SCALE = tl.constexpr(0.0625)  # dS's scale in fp16 (see above): ~sm_scale at head dims 64-256


@triton.jit
def _ds_operand(ds, x):
    """The float32 dS (or dS^T) as the operand of its dot with x: in x's dtype, scaled in fp16 (see above)."""
    if tl.constexpr(x.dtype == tl.float16):
        ds = ds * FP16_DS_SCALE
    return ds.to(x.dtype)


@triton.jit
def _grad_scale(sm_scale, X):
    """The factor that turns the accumulated dS @ x into dQ or dK stored at X: sm_scale, over fp16's dS scale."""
    scale = sm_scale
    if tl.constexpr(X.dtype.element_ty == tl.float16):
        scale = sm_scale / FP16_DS_SCALE
    return scale


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
def _split(x):
    """float64 -> (hi, lo) float32 with hi + lo = x to float64 rounding: differences of two such values,
    (hi_i - hi_j) + (lo_i - lo_j), are accurate to float32 rounding of the difference itself."""
    hi = x.to(tl.float32)
    return hi, (x - hi.to(tl.float64)).to(tl.float32)


@triton.jit
def _exact_decay(hi_q, lo_q, ck, c_ref):
    """(queries, keys) float32: each query's gate below each key's, (c[query] - c[key]) * log2(e), per element
    and accurate to its own rounding. The queries come as ``_split`` parts relative to c_ref, the keys as their
    float64 gates ck."""
    hi_k, lo_k = _split((ck - c_ref) * LOG2E)
    return (hi_q[:, None] - hi_k[None, :]) + (lo_q[:, None] - lo_k[None, :])


@triton.jit
def _tables_suffice(Cb, first, last, table_range):
    """Whether the score tables may serve the region around the diagonal between key positions ``first`` and
    ``last`` (which must cover every gate the tables touch there, their reference keys included): the gate
    falls there by at most ``table_range`` nats.

    Near the diagonal the tables' parts have both signs and round to 2^-24 of the gate's change across the
    region; where that change is small this costs nothing, so ordinary gates keep the fast path and only
    steep ones take the exact loops (experiments/045-exact-decay-tables)."""
    return tl.load(Cb + first) - tl.load(Cb + last) <= table_range


@triton.jit
def _query_rows(C, h, m, q_start, q_len, k_start, off, stride_ch, BLOCK_M: tl.constexpr):
    """Query block m of head h (forward and dQ): its rows and their gate relative to c_ref.

    Returns offs_m (row indices), row_ok, pos (key position of each row), row0 (64-bit first row), in_m,
    Cb (this head's gate row for the sequence), c_ref (the first row's gate) and hi_q, lo_q: ``_split`` of
    (c[pos] - c_ref) * log2(e), each row's gate below the first row (rows past the end: 0).
    """
    offs_m = m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < q_len
    pos = offs_m + off
    row0 = (q_start + m * BLOCK_M).to(tl.int64)  # 64-bit block base; in-block offsets stay 32-bit
    in_m = tl.arange(0, BLOCK_M)
    Cb = C + h.to(tl.int64) * stride_ch + k_start
    c_ref = tl.load(Cb + m * BLOCK_M + off)
    hi_q, lo_q = _split(tl.where(row_ok, (tl.load(Cb + pos, mask=row_ok, other=0.0) - c_ref) * LOG2E, 0.0))
    return offs_m, row_ok, pos, row0, in_m, Cb, c_ref, hi_q, lo_q


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
               DIAG_BLOCK: tl.constexpr, TILE_M: tl.constexpr, TILE_N: tl.constexpr, ACP: tl.constexpr):
    """Keys a query block visits: from lo (0, or ACP's first kept tile) to hi. Keys below diag lie in blocks of
    DIAG_BLOCK (the KC blocks) that end at or before the block's first row: there the score tables apply;
    from diag on, scores take the exact per-element decay (and the causal mask)."""
    lo = 0
    if ACP:
        lo = tl.load(KV_LO + seq * stride_lo_n + h * stride_lo_h + (m * BLOCK_M) // TILE_M) * TILE_N
    diag = ((m * BLOCK_M + off + 1) // DIAG_BLOCK) * DIAG_BLOCK
    hi = tl.minimum(m * BLOCK_M + BLOCK_M, q_len) + off
    return lo, diag, hi


@triton.jit
def _softmax_step(acc, l_i, m_i, s, shift, v, qk_scale):
    """One online-softmax step over a key block: scores s * qk_scale + shift[row] (log2 units, relative to each
    row's own gate; one FMA per score), values v."""
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale + shift)
    p = tl.math.exp2(s * qk_scale + (shift - m_new)[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return acc, l_i, m_new


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, ones, pos, hi_q, desc_k, desc_v, desc_kc, k_row, kv_col, kc_col, Cb, c_ref, k_len,
               lo, diag, hi, qk_scale, BLOCK_N: tl.constexpr):
    # s = q.k + KC (``ones @ kc^T`` adds each key's decay up to its block's last key, <= 0) and shift is each
    # row's gate below that last key: for keys wholly before the block's first row every part is <= 0. Blocks
    # from diag on (here only when their gates change little, see ``_exact_from``) are masked behind a
    # block-uniform branch, so a program fills its load pipeline once (two loops, unmasked then masked, were
    # 2-4% slower: experiments/027-fwd-one-key-loop).
    for start_n in range(lo, hi, BLOCK_N):
        k = desc_k.load([k_row + start_n, kv_col])
        v = desc_v.load([k_row + start_n, kv_col])
        kc = desc_kc.load([k_row + start_n, kc_col])
        shift = hi_q - ((tl.load(Cb + tl.minimum(start_n + BLOCK_N, k_len) - 1) - c_ref) * LOG2E).to(tl.float32)
        s = tl.dot(ones, kc.T, tl.dot(q, k.T))
        if start_n >= diag:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            s = tl.where(offs_n[None, :] <= pos[:, None], s, float("-inf"))
        acc, l_i, m_i = _softmax_step(acc, l_i, m_i, s, shift, v, qk_scale)
    return acc, l_i, m_i


@triton.jit
def _fwd_diagonal(acc, l_i, m_i, q, pos, hi_q, lo_q, desc_ks, desc_vs, k_start, kv_col, Cb, c_ref, lo, hi, qk_scale,
                  SUB_N: tl.constexpr):
    # Keys from the block's first row on: the exact per-element decay and the causal mask. Each key's gate sits
    # in registers, so the keys come in sub-blocks of SUB_N through the copy engine (a whole block's worth
    # spilled, 1.85x slower; pointer loads spilled too: experiments/045-exact-decay-tables).
    inv_scale = 1.0 / qk_scale
    in_n = tl.arange(0, SUB_N)
    for start_n in range(lo, hi, SUB_N):
        offs_n = start_n + in_n
        ok = offs_n < hi
        k = desc_ks.load([k_start + start_n, kv_col])
        v = desc_vs.load([k_start + start_n, kv_col])
        decay = _exact_decay(hi_q, lo_q, tl.load(Cb + offs_n, mask=ok, other=0.0), c_ref)
        s = tl.where(offs_n[None, :] <= pos[:, None], decay * inv_scale + tl.dot(q, k.T), float("-inf"))
        acc, l_i, m_i = _softmax_step(acc, l_i, m_i, s, tl.zeros_like(hi_q), v, qk_scale)
    return acc, l_i, m_i


@triton.jit
def fwd_kernel(desc_q, desc_k, desc_v, desc_kc, desc_ks, desc_vs, C, O, LSE, KV_LO, CU_Q, CU_K, num_sh,
               stride_ot, stride_oh, stride_ch, stride_lh, stride_lo_n, stride_lo_h, qk_scale, table_scale,
               table_range, seq_q, seq_k,
               H: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILE_M: tl.constexpr, TILE_N: tl.constexpr,
               ACP: tl.constexpr, UNIFORM: tl.constexpr, SUB_N: tl.constexpr):
    # Last query blocks first: along the causal diagonal they carry the most work.
    seq, h, m = _program(num_sh, H)
    m = tl.num_programs(1) - 1 - m
    if seq < 0:
        return
    q_start, q_len, k_start, k_len = _bounds(CU_Q, CU_K, seq, seq_q, seq_k, UNIFORM)
    if m * BLOCK_M >= q_len:
        return
    off = k_len - q_len
    offs_m, row_ok, pos, row0, in_m, Cb, c_ref, hi_q, lo_q = _query_rows(C, h, m, q_start, q_len, k_start, off,
                                                                         stride_ch, BLOCK_M)
    lo, diag, hi = _key_range(KV_LO, seq, h, m, q_len, off, stride_lo_n, stride_lo_h, BLOCK_M, BLOCK_N, TILE_M,
                              TILE_N, ACP)
    # The copy engine reads the query block (rows past the sequence are masked at the stores): measured -1% on the
    # forward kernel against pointer loads (experiments/042-fwd-query-tensor-descriptor). The program waits for
    # it here, so the plan's load above is issued first and its latency overlaps this one
    # (experiments/043-fwd-plan-load-first-ncu).
    q = desc_q.load([q_start + m * BLOCK_M, h * HEAD_DIM])

    kv_col = (h // GROUP) * HEAD_DIM
    kc_col = h * KC_COLS
    ones = tl.where(tl.arange(0, KC_COLS) < 3, table_scale, 0.0).to(tl.float16)[None, :] + tl.zeros(
        [BLOCK_M, KC_COLS], dtype=tl.float16)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    kc_end = tl.minimum(((hi - 1) // BLOCK_N) * BLOCK_N + BLOCK_N, k_len) - 1  # the last table reference key
    split = tl.where(_tables_suffice(Cb, tl.minimum(diag, m * BLOCK_M + off), kc_end, table_range), hi,
                     tl.maximum(lo, diag))
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, ones, pos, hi_q, desc_k, desc_v, desc_kc, k_start, kv_col, kc_col, Cb,
                               c_ref, k_len, lo, diag, split, qk_scale, BLOCK_N)
    acc, l_i, m_i = _fwd_diagonal(acc, l_i, m_i, q, pos, hi_q, lo_q, desc_ks, desc_vs, k_start, kv_col, Cb, c_ref,
                                  split, hi, qk_scale, SUB_N)
    o = acc * (1.0 / l_i)[:, None]  # one division per row, not per element: -88 instructions per thread (exp. 044)
    tl.store(_rows(O, row0, h, in_m, stride_ot, stride_oh, HEAD_DIM), o.to(O.dtype.element_ty), mask=row_ok[:, None])
    tl.store(LSE + h.to(tl.int64) * stride_lh + q_start + offs_m, m_i + tl.math.log2(l_i), mask=row_ok)


@triton.jit
def _dkdv_step(dk, dv, dck, sT, q, do, v, delta):
    """dK/dV's step over a query block from its transposed log2 probabilities sT."""
    pT = tl.math.exp2(sT)
    dv = tl.dot(pT.to(do.dtype), do, dv)
    dsT = pT * (tl.dot(v, do.T) - delta[None, :])
    return tl.dot(_ds_operand(dsT, q), q, dk), dv, dck + tl.sum(dsT, 1)


@triton.jit
def _dkdv_inner(dk, dv, dck, k, v, kc, offs_n, desc_q, desc_do, desc_qc, q_row, q_col, qc_col, DELTAb, Cqb, c_ref,
                q_len, off, lo, hi, qk_scale, BLOCK_M: tl.constexpr, QC_BLOCK: tl.constexpr, MASKED: tl.constexpr):
    # dQ's scores, transposed, through the tables; the scalar is the first row of QC's block below c_ref (KC's
    # last key). Unmasked, every query row of these blocks is a row of the sequence that sees every key.
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = desc_q.load([q_row + start_m, q_col])
        do = desc_do.load([q_row + start_m, q_col])
        qc = desc_qc.load([q_row + start_m, qc_col])
        if MASKED:
            delta = tl.load(DELTAb + offs_m, mask=offs_m < q_len, other=0.0)
        else:
            delta = tl.load(DELTAb + offs_m)
        shift = (tl.load(Cqb + (start_m // QC_BLOCK) * QC_BLOCK) - c_ref).to(tl.float32) * LOG2E
        sT = tl.dot(kc, qc.T, tl.dot(k, q.T)) * qk_scale + shift
        if MASKED:
            sT = tl.where((offs_n[:, None] <= (offs_m + off)[None, :]) & (offs_m < q_len)[None, :], sT,
                          float("-inf"))
        dk, dv, dck = _dkdv_step(dk, dv, dck, sT, q, do, v, delta)
    return dk, dv, dck


@triton.jit
def _dkdv_diagonal(dk, dv, dck, k, v, offs_n, hi_k, lo_k, desc_qs, desc_dos, q_start, q_col, DELTAb, LSEb, Cqb, c_ref,
                   off, lo, hi, qk_scale, SUB_M: tl.constexpr):
    # Query rows whose scores have decays of both signs: the exact per-element decay from (hi, lo) splits
    # relative to c_ref, the causal mask and rows past hi. Each query's gate sits in registers, so the rows come
    # in sub-blocks of SUB_M, through the copy engine (a whole block's worth, or pointer loads, spilled:
    # experiments/045-exact-decay-tables).
    in_m = tl.arange(0, SUB_M)
    for start_m in range(lo, hi, SUB_M):
        offs_m = start_m + in_m
        ok = offs_m < hi
        q = desc_qs.load([q_start + start_m, q_col])
        do = desc_dos.load([q_start + start_m, q_col])
        delta = tl.load(DELTAb + offs_m, mask=ok, other=0.0)
        lse = tl.load(LSEb + offs_m, mask=ok, other=0.0)
        hi_q, lo_q = _split(tl.where(ok, (tl.load(Cqb + offs_m, mask=ok, other=0.0) - c_ref) * LOG2E, 0.0))
        decay = (hi_q[None, :] - hi_k[:, None]) + ((lo_q - lse)[None, :] - lo_k[:, None])
        sT = tl.where((offs_n[:, None] <= (offs_m + off)[None, :]) & ok[None, :],
                      tl.dot(k, q.T) * qk_scale + decay, float("-inf"))
        dk, dv, dck = _dkdv_step(dk, dv, dck, sT, q, do, v, delta)
    return dk, dv, dck


@triton.jit
def dkdv_kernel(desc_q, desc_qs, K, V, KC, C, desc_do, desc_dos, desc_qc, DELTA, LSE, DK, DV, DCK, Q_HI, CU_Q, CU_K,
                num_sh, stride_kt, stride_kh, stride_vt, stride_vh, stride_kct,
                stride_dkt, stride_dkh, stride_dvt, stride_dvh, stride_ch, stride_lh, stride_hi_n, stride_hi_h,
                qk_scale, sm_scale, table_range, seq_q, seq_k,
                HKV: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILE_M: tl.constexpr, TILE_N: tl.constexpr,
                ACP: tl.constexpr, QC_BLOCK: tl.constexpr, KC_BLOCK: tl.constexpr,
                UNIFORM: tl.constexpr, SUB_M: tl.constexpr):
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
        kc_last = tl.minimum((n0 // KC_BLOCK) * KC_BLOCK + KC_BLOCK, k_len) - 1  # KC's reference key
        c_ref = tl.load(Cb + kc_last)
        hi_k, lo_k = _split(tl.where(key_ok, (tl.load(Cb + offs_n, mask=key_ok, other=0.0) - c_ref) * LOG2E, 0.0))
        kc = tl.load(KC + key0 * stride_kct + h * KC_COLS + in_n[:, None] * stride_kct + cols[None, :],
                     mask=key_ok[:, None], other=0.0)
        q_end = q_len
        if ACP:
            q_end = tl.minimum(q_len, tl.load(Q_HI + seq * stride_hi_n + h * stride_hi_h + n0 // TILE_N) * TILE_M)
        q_whole = (q_end // BLOCK_M) * BLOCK_M
        DELTAb = DELTA + h.to(tl.int64) * stride_lh + q_start
        LSEb = LSE + h.to(tl.int64) * stride_lh + q_start
        dck = tl.zeros([BLOCK_N], dtype=tl.float32)
        q_col = h * HEAD_DIM
        qc_col = h * KC_COLS
        # From the first query block whose QC block starts at or after KC's reference key, every table part is
        # <= 0. Before it (q_lo to head), decays have both signs: the tables serve them where the gate changes
        # little there, the exact loop elsewhere. The last partial block lies past q_mid: masked tables.
        q_mid = tl.maximum(q_full, tl.cdiv(tl.maximum(kc_last - off, 0), QC_BLOCK) * QC_BLOCK)
        head = tl.minimum(q_mid, q_end)
        first = tl.minimum(tl.minimum(n0, (q_lo // QC_BLOCK) * QC_BLOCK + off), k_len - 1)
        last = tl.minimum(tl.maximum(kc_last, head - 1 + off), k_len - 1)
        exact_end = tl.where(_tables_suffice(Cb, first, last, table_range), q_lo, head)
        dk, dv, dck = _dkdv_diagonal(dk, dv, dck, k, v, offs_n, hi_k, lo_k, desc_qs, desc_dos, q_start, q_col, DELTAb,
                                     LSEb, Cb + off, c_ref, off, q_lo, exact_end, qk_scale, SUB_M)
        dk, dv, dck = _dkdv_inner(dk, dv, dck, k, v, kc, offs_n, desc_q, desc_do, desc_qc, q_start, q_col, qc_col,
                                  DELTAb, Cb + off, c_ref, q_len, off, exact_end, head, qk_scale, BLOCK_M, QC_BLOCK,
                                  True)
        dk, dv, dck = _dkdv_inner(dk, dv, dck, k, v, kc, offs_n, desc_q, desc_do, desc_qc, q_start, q_col, qc_col,
                                  DELTAb, Cb + off, c_ref, q_len, off, q_mid, q_whole, qk_scale, BLOCK_M, QC_BLOCK,
                                  False)
        dk, dv, dck = _dkdv_inner(dk, dv, dck, k, v, kc, offs_n, desc_q, desc_do, desc_qc, q_start, q_col, qc_col,
                                  DELTAb, Cb + off, c_ref, q_len, off, tl.maximum(q_mid, q_whole), q_end, qk_scale,
                                  BLOCK_M, QC_BLOCK, True)
        tl.store(DCK + h.to(tl.int64) * stride_ch + k_start + offs_n, dck, mask=key_ok)
    tl.store(_rows(DK, key0, kvh, in_n, stride_dkt, stride_dkh, HEAD_DIM),
             (dk * _grad_scale(sm_scale, K)).to(DK.dtype.element_ty), mask=key_ok[:, None])
    tl.store(_rows(DV, key0, kvh, in_n, stride_dvt, stride_dvh, HEAD_DIM), dv.to(DV.dtype.element_ty),
             mask=key_ok[:, None])


@triton.jit
def _dq_step(dq, dcq, s, k, v, do, delta):
    """dQ's step over a key block from its log2 probabilities s."""
    p = tl.math.exp2(s)
    ds = p * (tl.dot(do, v.T) - delta[:, None])
    return tl.dot(_ds_operand(ds, k), k, dq), dcq + tl.sum(ds, 1)


@triton.jit
def _dq_inner(dq, dcq, q, do, qc, delta, pos, desc_k, desc_v, desc_kc, k_row, kv_col, kc_col, Cb, c_ref, k_len, lo,
              diag, hi, qk_scale, BLOCK_N: tl.constexpr, KC_BLOCK: tl.constexpr):
    # q.k plus the whole score but for the scalar shift, the first row's gate below KC's last key (<= 0 for KC
    # blocks that end at or before the block's first row). Blocks from diag on (here only when their gates
    # change little, see ``_exact_from``) are masked behind a block-uniform branch, as in the forward.
    for start_n in range(lo, hi, BLOCK_N):
        k = desc_k.load([k_row + start_n, kv_col])
        v = desc_v.load([k_row + start_n, kv_col])
        kc = desc_kc.load([k_row + start_n, kc_col])
        kc_last = tl.minimum((start_n // KC_BLOCK) * KC_BLOCK + KC_BLOCK, k_len) - 1
        shift = (c_ref - tl.load(Cb + kc_last)).to(tl.float32) * LOG2E
        s = tl.dot(qc, kc.T, tl.dot(q, k.T)) * qk_scale + shift
        if start_n >= diag:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            s = tl.where(offs_n[None, :] <= pos[:, None], s, float("-inf"))
        dq, dcq = _dq_step(dq, dcq, s, k, v, do, delta)
    return dq, dcq


@triton.jit
def _dq_diagonal(dq, dcq, q, do, delta, pos, hi_q, lo_q, desc_ks, desc_vs, k_start, kv_col, Cb, c_ref, lo, hi,
                 qk_scale, SUB_N: tl.constexpr):
    # The rest, as the forward's diagonal: exact per-element decay (lo_q carries the rows' LSE), causal mask, keys
    # in sub-blocks of SUB_N through the copy engine (pointer loads through registers spilled: experiments/045).
    # Keys past the end of the sequence only occur here, where causality masks them.
    in_n = tl.arange(0, SUB_N)
    for start_n in range(lo, hi, SUB_N):
        offs_n = start_n + in_n
        ok = offs_n < hi
        k = desc_ks.load([k_start + start_n, kv_col])
        v = desc_vs.load([k_start + start_n, kv_col])
        decay = _exact_decay(hi_q, lo_q, tl.load(Cb + offs_n, mask=ok, other=0.0), c_ref)
        s = tl.where(offs_n[None, :] <= pos[:, None], tl.dot(q, k.T) * qk_scale + decay, float("-inf"))
        dq, dcq = _dq_step(dq, dcq, s, k, v, do, delta)
    return dq, dcq


@triton.jit
def dq_kernel(Q, desc_k, desc_v, desc_ks, desc_vs, QC, desc_kc, C, O, DO, DELTA, LSE, DQ, DCQ, KV_LO, CU_Q, CU_K,
              num_sh, stride_qt, stride_qh, stride_qct, stride_ot, stride_oh,
              stride_dot, stride_doh, stride_dqt, stride_dqh, stride_ch, stride_lh, stride_lo_n, stride_lo_h, qk_scale,
              sm_scale, table_range, H: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILE_M: tl.constexpr, TILE_N: tl.constexpr,
              ACP: tl.constexpr, KC_BLOCK: tl.constexpr, SUB_N: tl.constexpr):
    # Runs before dK/dV: it computes each row's softmax correction delta = rowsum(dO * O) and stores it there.
    # KC_BLOCK: KC's blocks (the forward's), a multiple of BLOCK_N. Bounds come from the offsets even in a
    # uniform batch: measured faster here (ACP 0.79 vs 0.82 ms at 24x64 4k, experiments/031-per-program-start;
    # exact 1.36 vs 1.40 at experiments/036-dkdv-one-query-loop).
    seq, h, m = _program(num_sh, H)  # as in fwd_kernel: longest rows first
    m = tl.num_programs(1) - 1 - m
    if seq < 0:
        return
    q_start, q_len, k_start, k_len = _bounds(CU_Q, CU_K, seq, 0, 0, False)
    if m * BLOCK_M >= q_len:
        return
    off = k_len - q_len
    offs_m, row_ok, pos, row0, in_m, Cb, c_ref, hi_q, lo_q = _query_rows(C, h, m, q_start, q_len, k_start, off,
                                                                         stride_ch, BLOCK_M)
    lo_q -= tl.load(LSE + h.to(tl.int64) * stride_lh + q_start + offs_m, mask=row_ok, other=0.0)
    q = _block(Q, row0, h, in_m, row_ok, stride_qt, stride_qh, HEAD_DIM)
    do = _block(DO, row0, h, in_m, row_ok, stride_dot, stride_doh, HEAD_DIM)
    o = _block(O, row0, h, in_m, row_ok, stride_ot, stride_oh, HEAD_DIM)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + h.to(tl.int64) * stride_lh + q_start + offs_m, delta, mask=row_ok)
    lo, diag, hi = _key_range(KV_LO, seq, h, m, q_len, off, stride_lo_n, stride_lo_h, BLOCK_M, KC_BLOCK, TILE_M,
                              TILE_N, ACP)
    qc = tl.load(QC + row0 * stride_qct + h * KC_COLS + in_m[:, None] * stride_qct + tl.arange(0, KC_COLS)[None, :],
                 mask=row_ok[:, None], other=0.0)
    kv_col = (h // GROUP) * HEAD_DIM
    kc_col = h * KC_COLS
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    dcq = tl.zeros([BLOCK_M], dtype=tl.float32)
    diag_n = ((m * BLOCK_M + off + 1) // BLOCK_N) * BLOCK_N  # key blocks from here on need the causal mask
    kc_end = tl.minimum(((hi - 1) // KC_BLOCK) * KC_BLOCK + KC_BLOCK, k_len) - 1  # the last table reference key
    split = tl.where(_tables_suffice(Cb, tl.minimum(diag, m * BLOCK_M + off), kc_end, table_range), hi,
                     tl.maximum(lo, diag))
    dq, dcq = _dq_inner(dq, dcq, q, do, qc, delta, pos, desc_k, desc_v, desc_kc, k_start, kv_col, kc_col, Cb, c_ref,
                        k_len, lo, diag_n, split, qk_scale, BLOCK_N, KC_BLOCK)
    dq, dcq = _dq_diagonal(dq, dcq, q, do, delta, pos, hi_q, lo_q, desc_ks, desc_vs, k_start, kv_col, Cb, c_ref, split,
                           hi, qk_scale, SUB_N)
    tl.store(_rows(DQ, row0, h, in_m, stride_dqt, stride_dqh, HEAD_DIM),
             (dq * _grad_scale(sm_scale, Q)).to(DQ.dtype.element_ty), mask=row_ok[:, None])
    tl.store(DCQ + h.to(tl.int64) * stride_lh + q_start + offs_m, dcq, mask=row_ok)


@triton.jit
def table_rows(x, one, QUERY: tl.constexpr):
    """(N,) float64 values x / S (q.k units over the table scale S) -> (N, KC_COLS) fp16 rows of a score table.

    x is clamped to +-TABLE_LIMIT and split into three fp16 parts whose float32 sum is x to ~2^-24 of it; they
    fill columns 0-2 (keys: KC) or 3-5 (queries: QC), ``one`` (= S, a power of two) the other three, zeros the
    rest, so a QC row times a KC row is the sum of both values in q.k units, exactly.
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
    return tl.where(ones, one, vals).to(tl.float16)


@triton.jit
def qc_table_kernel(C, LSE, TAB, CU_Q, CU_K, stride_ch, stride_lh, stride_tt, scale, table_scale, seq_q, seq_k,
                    H: tl.constexpr, BLOCK: tl.constexpr, UNIFORM: tl.constexpr):
    """The query table QC, (total_q, H, KC_COLS) fp16, for blocks of BLOCK rows (``table_rows``).

    Row i of block b (first row i0) of a sequence holds ((C[i] - C[i0]) - LSE[i] / log2(e)) * scale, the gate
    below the block's first row minus the row's LSE in q.k units over the table scale (``scale`` =
    1 / (sm_scale * table_scale)), with C taken at the rows' key positions. (KC, the keys' table, is built by
    the gate scan: ``triton_gate``.)
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
    tl.store(TAB + rows * stride_tt + h * KC_COLS + tl.arange(0, KC_COLS)[None, :],
             table_rows(x * scale, table_scale, True), mask=ok[:, None])
