"""Split-KV Triton kernel for ``forgetting_attention_with_paged_kvcache``: the decode kernel over a block table.

The grid and the work split are those of triton_decode.py's split kernel (one program per GQA group, row
chunk and split; its partials merge in the same combine kernel). Two things differ. Each key block is found
through the block table, one pool block of 64 contiguous rows per (sequence, KV head). And the shared range
starts at the group's resident start instead of a searched ACP start: the cache frees, between steps,
the blocks every row of the group prunes, so the few resident blocks a row still prunes (at most those of
the last few steps) are masked per row inside the loop, from the block's last c, as the search would.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .triton_balance import _program_share, _store_program_rows, combine, partials, share_args
from .triton_decode import (
    MAX_ROWS,
    NUM_STAGES,
    NUM_WARPS,
    _attend_block,
    _store_rows,
    balanced_grid,
    combine_splits,
    num_splits,
)
from .validate import CacheProblem


# fmt: off
@triton.jit
def _paged_rows(Q, C, Table, Lens, b, kvh, chunk, stride_qb, stride_qt, stride_qh, stride_cp, stride_cn, stride_tb,
                stride_th, max_len, TQ: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The rows of row chunk ``chunk`` of a GQA group (mask, query index, column in the group's c blocks, head),
    the sequence's length L, the rows' positions, the group's block-table row, the rows' c and q."""
    r = chunk * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = r < TQ * GROUP
    i = r // GROUP
    g = r % GROUP  # the query head's column in the group's c blocks
    h = kvh * GROUP + g
    L = tl.minimum(tl.maximum(tl.load(Lens + b), TQ), max_len)  # valid lengths pass; others stay in bounds
    pos = L - TQ + i
    Tb = Table + b.to(tl.int64) * stride_tb + kvh * stride_th
    q_blk = tl.load(Tb + pos // BLOCK_N, mask=row_ok, other=0).to(tl.int64)
    c_q = tl.load(C + q_blk * stride_cp + (pos % BLOCK_N) * stride_cn + g, mask=row_ok, other=0.0)
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b.to(tl.int64) * stride_qb + i[:, None] * stride_qt + h[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None], other=0.0)
    return row_ok, i, g, h, L, pos, Tb, c_q, q


@triton.jit
def _paged_range(q, K, V, C, Delta, Tb, c_q, g, h, pos, row_ok, L, start, stop, stride_kp, stride_kn, stride_vp,
                 stride_vn, stride_cp, stride_cn, qk_scale, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, ACP: tl.constexpr, PRECISION: tl.constexpr):
    """The rows' (max, sum, unnormalised output) over logical blocks [start, stop), found through the table."""
    if ACP:
        delta = tl.load(Delta + h, mask=row_ok, other=0.0)
    d = tl.arange(0, HEAD_DIM)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    nn = tl.arange(0, BLOCK_N)
    for blk in range(start, stop):
        phys = tl.load(Tb + blk).to(tl.int64)
        n = blk * BLOCK_N + nn
        cached = n < L  # past the length the block holds stale keys of an earlier owner, or garbage
        k = tl.load(K + phys * stride_kp + nn[:, None] * stride_kn + d[None, :], mask=cached[:, None], other=0.0)
        v = tl.load(V + phys * stride_vp + nn[:, None] * stride_vn + d[None, :], mask=cached[:, None], other=0.0)
        keep = (n[None, :] <= pos[:, None]) & row_ok[:, None]
        if ACP:
            # The row keeps the block when its largest decay (to the block's last cached key) is >= delta.
            last = tl.minimum(BLOCK_N, L - blk * BLOCK_N) - 1
            c_end = tl.load(C + phys * stride_cp + last * stride_cn + g, mask=row_ok, other=0.0)
            keep = keep & ((c_q - c_end) >= delta)[:, None]
        c_k = tl.load(C + phys * stride_cp + nn[None, :] * stride_cn + g[:, None], mask=keep, other=0.0)
        m_i, l_i, acc = _attend_block(q, k, v, c_q, c_k, keep, m_i, l_i, acc, qk_scale, PRECISION)
    return m_i, l_i, acc


@triton.jit
def _paged_split_kernel(Q, K, V, C, Table, Start, Lens, Delta, Out, Part_ml, Part_acc,
                        stride_qb, stride_qt, stride_qh, stride_kp, stride_kn, stride_vp, stride_vn,
                        stride_cp, stride_cn, stride_tb, stride_th, qk_scale, max_len,
                        HQ: tl.constexpr, HKV: tl.constexpr, TQ: tl.constexpr, GROUP: tl.constexpr,
                        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        NUM_SPLITS: tl.constexpr, ACP: tl.constexpr, PRECISION: tl.constexpr):
    b = tl.program_id(0) // HKV
    kvh = tl.program_id(0) % HKV
    split = tl.program_id(1)
    row_ok, i, g, h, L, pos, Tb, c_q, q = _paged_rows(Q, C, Table, Lens, b, kvh, tl.program_id(2), stride_qb,
                                                      stride_qt, stride_qh, stride_cp, stride_cn, stride_tb,
                                                      stride_th, max_len, TQ, GROUP, HEAD_DIM, BLOCK_M, BLOCK_N)
    num_blocks = tl.cdiv(L, BLOCK_N)
    lo = tl.minimum(tl.load(Start + b * HKV + kvh), num_blocks - 1)
    per_split = tl.cdiv(num_blocks - lo, NUM_SPLITS)
    start = lo + split * per_split
    stop = tl.minimum(start + per_split, num_blocks)
    m_i, l_i, acc = _paged_range(q, K, V, C, Delta, Tb, c_q, g, h, pos, row_ok, L, start, stop, stride_kp,
                                 stride_kn, stride_vp, stride_vn, stride_cp, stride_cn, qk_scale, HEAD_DIM, BLOCK_M,
                                 BLOCK_N, ACP, PRECISION)
    row = (b * TQ + i) * HQ + h  # (sequence, query, head) index into the (B, Tq, Hq, ...) outputs
    _store_rows(Out, Part_ml, Part_acc, acc, m_i, l_i, row, split, row_ok, NUM_SPLITS, HEAD_DIM)


@triton.jit
def _paged_balanced_kernel(Q, K, V, C, Table, Lens, Lo, Kept, Delta, Out, Part_ml, Part_acc,
                           stride_qb, stride_qt, stride_qh, stride_kp, stride_kn, stride_vp, stride_vn,
                           stride_cp, stride_cn, stride_tb, stride_th, qk_scale, max_len,
                           HQ: tl.constexpr, HKV: tl.constexpr, TQ: tl.constexpr, GROUP: tl.constexpr,
                           CHUNKS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, NUM_GROUPS: tl.constexpr, GROUPS_PAD: tl.constexpr,
                           PROGRAMS: tl.constexpr, MIN_BLOCKS: tl.constexpr, ACP: tl.constexpr,
                           PRECISION: tl.constexpr):
    """The balanced schedule's split kernel (triton_balance.py) over the block table."""
    p = tl.program_id(0)
    grp, n, first, kept = _program_share(Kept, p, NUM_GROUPS, GROUPS_PAD, PROGRAMS, MIN_BLOCKS)
    if grp < NUM_GROUPS:
        b = grp // (HKV * CHUNKS)
        kvh = (grp // CHUNKS) % HKV
        row_ok, i, g, h, L, pos, Tb, c_q, q = _paged_rows(Q, C, Table, Lens, b, kvh, grp % CHUNKS, stride_qb,
                                                          stride_qt, stride_qh, stride_cp, stride_cn, stride_tb,
                                                          stride_th, max_len, TQ, GROUP, HEAD_DIM, BLOCK_M,
                                                          BLOCK_N)
        per_split = tl.cdiv(kept, n)
        start = tl.load(Lo + grp) + (p - first) * per_split
        stop = tl.minimum(start + per_split, tl.cdiv(L, BLOCK_N))
        m_i, l_i, acc = _paged_range(q, K, V, C, Delta, Tb, c_q, g, h, pos, row_ok, L, start, stop, stride_kp,
                                     stride_kn, stride_vp, stride_vn, stride_cp, stride_cn, qk_scale, HEAD_DIM,
                                     BLOCK_M, BLOCK_N, ACP, PRECISION)
        _store_program_rows(Out, Part_ml, Part_acc, acc, m_i, l_i, (b * TQ + i) * HQ + h, p, n, row_ok, HEAD_DIM,
                            BLOCK_M)


# fmt: on
def paged_decode_attention(
    q: Tensor,
    k_pool: Tensor,
    v_pool: Tensor,
    c_pool: Tensor,
    block_table: Tensor,
    block_start: Tensor,
    cache_seqlens: Tensor,
    delta: Tensor | None,
    problem: CacheProblem,
    splits: int | None = None,
    schedule: str | None = None,
) -> Tensor:
    """Run the paged split kernel and the combine kernel; inputs as validated by ``paged.check_paged_inputs``.

    delta: (Hq,) float32 on the device (``paged.paged_threshold``), or None for no pruning.
    splits: per group (default ``num_splits``, or ``balanced_programs`` for the balanced schedule); schedule:
    "even", "balanced" (triton_balance.py: the programs shared out by resident blocks) or "auto"
    (``triton_decode.resolve_schedule``), default ``triton_decode.SCHEDULE``.
    Returns (B, Tq, Hq, D) in q's dtype.
    """
    B, Tq, Hq, D = q.shape
    Hkv, group, block_n = problem.kv_heads, problem.group, k_pool.shape[1]
    q = q if q.stride(-1) == 1 else q.contiguous()
    rows = Tq * group
    block_m = max(16, min(MAX_ROWS, triton.next_power_of_2(rows)))
    chunks = triton.cdiv(rows, block_m)
    groups = B * Hkv * chunks
    out = torch.empty(B, Tq, Hq, D, dtype=q.dtype, device=q.device)
    programs = balanced_grid(
        schedule, pruning=delta is not None, groups=groups, max_len=problem.max_len, device=q.device,
        block_n=block_n, splits=splits,
    )  # fmt: skip
    if programs is not None:
        return _balanced(q, k_pool, v_pool, c_pool, block_table, block_start, cache_seqlens, delta, problem,
                         out, block_m, programs)  # fmt: skip
    splits = splits or num_splits(groups, problem.max_len, q.device, block_n)
    part_ml = part_acc = out  # unused with one split
    if splits > 1:
        part_ml = torch.empty(B * Tq * Hq * splits * 2, dtype=torch.float32, device=q.device)
        part_acc = torch.empty(B * Tq * Hq * splits, D, dtype=torch.float32, device=q.device)
    start = block_start.contiguous()
    _paged_split_kernel[(B * Hkv, splits, chunks)](
        q, k_pool, v_pool, c_pool, block_table, start, cache_seqlens.contiguous(),
        delta if delta is not None else out, out, part_ml, part_acc,
        *q.stride()[:3], *k_pool.stride()[:2], *v_pool.stride()[:2], *c_pool.stride()[:2],
        *block_table.stride()[:2], qk_scale=problem.sm_scale * 1.4426950408889634, max_len=problem.max_len,
        HQ=Hq, HKV=Hkv, TQ=Tq, GROUP=group, HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n, NUM_SPLITS=splits,
        ACP=delta is not None, PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )  # fmt: skip
    if splits > 1:
        combine_splits(part_ml, part_acc, out, splits)
    return out


def _balanced(q, k_pool, v_pool, c_pool, block_table, block_start, cache_seqlens, delta, problem, out, block_m,
              programs):  # fmt: skip
    """The balanced schedule: each group's resident blocks from the start pointers and lengths (a few small
    ops on the device, no search: the cache already freed what every row prunes), then its split kernel and
    the shared combine."""
    B, Tq, Hq, D = q.shape
    Hkv, group, block_n = problem.kv_heads, problem.group, k_pool.shape[1]
    chunks = triton.cdiv(Tq * group, block_m)
    share = share_args(B * Hkv * chunks, programs)
    lens = cache_seqlens.contiguous()
    blocks = (lens.clamp(Tq, problem.max_len) + block_n - 1) // block_n  # the kernel's cdiv(L, BLOCK_N)
    lo = torch.minimum(block_start, blocks[:, None] - 1)
    lo, kept = (x.to(torch.int32).repeat_interleave(chunks, dim=1).reshape(-1) for x in (lo, blocks[:, None] - lo))
    part_ml, part_acc = partials(programs, block_m, D, q.device)
    shape = dict(HQ=Hq, HKV=Hkv, TQ=Tq, GROUP=group, CHUNKS=chunks, BLOCK_M=block_m)
    _paged_balanced_kernel[(programs,)](
        q, k_pool, v_pool, c_pool, block_table, lens, lo, kept, delta if delta is not None else out, out,
        part_ml, part_acc, *q.stride()[:3], *k_pool.stride()[:2], *v_pool.stride()[:2], *c_pool.stride()[:2],
        *block_table.stride()[:2], qk_scale=problem.sm_scale * 1.4426950408889634, max_len=problem.max_len,
        **shape, **share, HEAD_DIM=D, BLOCK_N=block_n, ACP=delta is not None,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32", num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )  # fmt: skip
    combine(kept, part_ml, part_acc, out, shape, share)
    return out
