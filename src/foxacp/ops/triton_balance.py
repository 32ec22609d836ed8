"""The balanced schedule of the decode kernel: splits in proportion to each group's kept blocks.

The even schedule (triton_decode.py) gives every GQA group (sequence, KV head, row chunk) the same number of
splits, so a step lasts as long as its longest group takes over that many programs: with ACP, heads that keep
the whole cache set the time while heads that keep a few blocks leave their programs idle (experiment 052).
Here three launches of fixed grids share the work by what is actually kept:

1. plan, one program per group: each row's ACP start (the search of the split kernel), written per row, and
   the group's kept blocks (from its earliest row start to the end of its sequence);
2. split, P programs (about PROGRAMS_PER_SM per multiprocessor): every program reads all groups' kept counts,
   gives group g ``1 + kept_g * extra // total`` splits (``extra`` = the programs beyond one per group, fewer
   when splits would get under MIN_BLOCKS_PER_SPLIT blocks), finds its own (group, split) in the prefix sum,
   and streams that share; programs past the last split exit. A group with one split writes its output;
3. combine, one program per row: the same counts say which programs hold the row's partials.

The grid depends only on the shapes; the counts are read on the device: a step captures in a CUDA graph.
The balanced schedule pays one more launch; the default schedule ("auto", ``triton_decode.resolve_schedule``)
takes it for calls that prune and for exact calls with at least one group per multiprocessor (experiment 052).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .config import pdl_args
from .triton_decode import (
    MIN_BLOCKS_PER_SPLIT,
    NUM_STAGES,
    NUM_WARPS,
    _attend_range,
    _group_rows,
    _row_starts,
    _search_shape,
    threshold_args,
)
from .validate import CacheProblem

COMBINE_SPLITS = 32  # partials a combine program merges per step of its loop


# fmt: off
@triton.jit
def _plan_kernel(Q, C, Lens, U, LogEps, RowLo, Lo, Kept, stride_qb, stride_qt, stride_qh, stride_cb, stride_ct,
                 stride_ch, stride_ub, stride_uh, max_len, HQ: tl.constexpr, HKV: tl.constexpr, TQ: tl.constexpr,
                 GROUP: tl.constexpr, CHUNKS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, ACP: tl.constexpr, FANOUT: tl.constexpr, LEVELS: tl.constexpr,
                 STRIDE0: tl.constexpr, PDL: tl.constexpr):
    if PDL:  # launched early (programmatic dependent launch): q and c come from the kernels before
        tl.extra.cuda.gdc_wait()
    g = tl.program_id(0)
    b = g // (HKV * CHUNKS)
    row_ok, i, h, L, _, Cb, c_q, _ = _group_rows(Q, C, Lens, b, (g // CHUNKS) % HKV, g % CHUNKS, stride_qb,
                                                 stride_qt, stride_qh, stride_cb, stride_ct, stride_ch, max_len, TQ,
                                                 GROUP, HEAD_DIM, BLOCK_M)
    row_lo = _row_starts(Cb, U, LogEps, b, h, c_q, row_ok, L, stride_ct, stride_ch, stride_ub, stride_uh, ACP,
                         BLOCK_M, BLOCK_N, FANOUT, LEVELS, STRIDE0)
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
    tl.store(RowLo + (b * TQ + i) * HQ + h, row_lo, mask=row_ok)
    num_blocks = tl.cdiv(L, BLOCK_N)
    lo = tl.min(tl.where(row_ok, row_lo, num_blocks), axis=0)
    tl.store(Lo + g, lo)
    tl.store(Kept + g, num_blocks - lo)  # >= 1: every row keeps the block that holds its own key


@triton.jit
def _shares(Kept, NUM_GROUPS: tl.constexpr, GROUPS_PAD: tl.constexpr, PROGRAMS: tl.constexpr,
            MIN_BLOCKS: tl.constexpr):
    """Every group's splits, their prefix sum (the program after each group's last) and its kept blocks, as
    GROUPS_PAD vectors: the same numbers in every program (all read the same counts)."""
    idx = tl.arange(0, GROUPS_PAD)
    kept = tl.load(Kept + idx, mask=idx < NUM_GROUPS, other=0)
    total = tl.sum(kept, axis=0)
    extra = tl.minimum(PROGRAMS - NUM_GROUPS, total // MIN_BLOCKS)
    splits = tl.where(idx < NUM_GROUPS, 1 + kept * extra // tl.maximum(total, 1), 0)  # sums to <= PROGRAMS
    return splits, tl.cumsum(splits, axis=0), kept


@triton.jit
def _at(x, g, GROUPS_PAD: tl.constexpr):
    """Element g of the GROUPS_PAD vector x."""
    return tl.sum(tl.where(tl.arange(0, GROUPS_PAD) == g, x, 0), axis=0)


@triton.jit
def _program_share(Kept, p, NUM_GROUPS: tl.constexpr, GROUPS_PAD: tl.constexpr, PROGRAMS: tl.constexpr,
                   MIN_BLOCKS: tl.constexpr):
    """Program p's group (NUM_GROUPS when p is past the last split), that group's splits, its first program,
    and its kept blocks."""
    splits, ends, kept = _shares(Kept, NUM_GROUPS, GROUPS_PAD, PROGRAMS, MIN_BLOCKS)
    grp = tl.sum((ends <= p).to(tl.int32), axis=0)
    n = _at(splits, grp, GROUPS_PAD)
    return grp, n, _at(ends, grp, GROUPS_PAD) - n, _at(kept, grp, GROUPS_PAD)


@triton.jit
def _balanced_split_kernel(Q, K, V, C, Lens, RowLo, Lo, Kept, Out, Part_ml, Part_acc,
                           stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt,
                           stride_vh, stride_cb, stride_ct, stride_ch, qk_scale, max_len,
                           HQ: tl.constexpr, HKV: tl.constexpr, TQ: tl.constexpr, GROUP: tl.constexpr,
                           CHUNKS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, NUM_GROUPS: tl.constexpr, GROUPS_PAD: tl.constexpr,
                           PROGRAMS: tl.constexpr, MIN_BLOCKS: tl.constexpr, PRECISION: tl.constexpr,
                           PDL: tl.constexpr):
    if PDL:  # the plan kernel's shares, q and the cache come from the kernels before
        tl.extra.cuda.gdc_wait()
    p = tl.program_id(0)
    g, n, first, kept = _program_share(Kept, p, NUM_GROUPS, GROUPS_PAD, PROGRAMS, MIN_BLOCKS)
    if g < NUM_GROUPS:
        b = g // (HKV * CHUNKS)
        kvh = (g // CHUNKS) % HKV
        row_ok, i, h, L, pos, Cb, c_q, q = _group_rows(Q, C, Lens, b, kvh, g % CHUNKS, stride_qb, stride_qt,
                                                       stride_qh, stride_cb, stride_ct, stride_ch, max_len, TQ,
                                                       GROUP, HEAD_DIM, BLOCK_M)
        row = (b * TQ + i) * HQ + h
        row_lo = tl.load(RowLo + row, mask=row_ok, other=0)
        per_split = tl.cdiv(kept, n)
        start = tl.load(Lo + g) + (p - first) * per_split
        stop = tl.minimum(start + per_split, tl.cdiv(L, BLOCK_N))
        b64 = b.to(tl.int64)
        m_i, l_i, acc = _attend_range(q, K + b64 * stride_kb + kvh * stride_kh,
                                      V + b64 * stride_vb + kvh * stride_vh, Cb, c_q, h, pos, row_ok, row_lo, L,
                                      start, stop, stride_kt, stride_vt, stride_ct, stride_ch, qk_scale, HEAD_DIM,
                                      BLOCK_M, BLOCK_N, PRECISION)
        if PDL:  # programs without a share exit early, which lets the next kernel launch as well
            tl.extra.cuda.gdc_launch_dependents()
        _store_program_rows(Out, Part_ml, Part_acc, acc, m_i, l_i, row, p, n, row_ok, HEAD_DIM, BLOCK_M)


@triton.jit
def _store_program_rows(Out, Part_ml, Part_acc, acc, m_i, l_i, row, p, n, row_ok, HEAD_DIM: tl.constexpr,
                        BLOCK_M: tl.constexpr):
    """The rows' output when their group has one split (n == 1); else program p's partials, in its BLOCK_M
    slots of the (PROGRAMS, BLOCK_M) partials whatever the groups' shares."""
    d = tl.arange(0, HEAD_DIM)
    if n == 1:
        o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(Out + row[:, None].to(tl.int64) * HEAD_DIM + d[None, :], o.to(Out.dtype.element_ty),
                 mask=row_ok[:, None])
    else:
        slot = p * BLOCK_M + tl.arange(0, BLOCK_M)
        tl.store(Part_ml + slot * 2, m_i, mask=row_ok)
        tl.store(Part_ml + slot * 2 + 1, l_i, mask=row_ok)
        tl.store(Part_acc + slot[:, None].to(tl.int64) * HEAD_DIM + d[None, :], acc, mask=row_ok[:, None])


@triton.jit
def _balanced_combine_kernel(Kept, Part_ml, Part_acc, Out, HQ: tl.constexpr, HKV: tl.constexpr, TQ: tl.constexpr,
                             GROUP: tl.constexpr, CHUNKS: tl.constexpr, HEAD_DIM: tl.constexpr,
                             BLOCK_M: tl.constexpr, NUM_GROUPS: tl.constexpr, GROUPS_PAD: tl.constexpr,
                             PROGRAMS: tl.constexpr, MIN_BLOCKS: tl.constexpr, SPLITS: tl.constexpr,
                             PDL: tl.constexpr):
    """Merge one row's partials, o = sum_s 2^(m_s - m) acc_s / sum_s 2^(m_s - m) l_s, SPLITS at a time."""
    if PDL:
        tl.extra.cuda.gdc_wait()
    row = tl.program_id(0)
    h = row % HQ
    i = (row // HQ) % TQ
    b = row // (HQ * TQ)
    r = i * GROUP + h % GROUP
    g = (b * HKV + h // GROUP) * CHUNKS + r // BLOCK_M
    splits, ends, _ = _shares(Kept, NUM_GROUPS, GROUPS_PAD, PROGRAMS, MIN_BLOCKS)
    n = _at(splits, g, GROUPS_PAD)
    first = _at(ends, g, GROUPS_PAD) - n
    if n > 1:
        d = tl.arange(0, HEAD_DIM)
        m = tl.full([1], float("-inf"), dtype=tl.float32)
        l = tl.zeros([1], dtype=tl.float32)
        acc = tl.zeros([HEAD_DIM], dtype=tl.float32)
        for s0 in range(0, n, SPLITS):
            s = s0 + tl.arange(0, SPLITS)
            ok = s < n
            slot = (first + s) * BLOCK_M + r % BLOCK_M
            m_s = tl.load(Part_ml + slot * 2, mask=ok, other=float("-inf"))
            l_s = tl.load(Part_ml + slot * 2 + 1, mask=ok, other=0.0)
            a_s = tl.load(Part_acc + slot[:, None].to(tl.int64) * HEAD_DIM + d[None, :], mask=ok[:, None], other=0.0)
            m_new = tl.maximum(m, tl.max(m_s, 0))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # empty splits (m_s = -inf) weigh 0
            alpha = tl.math.exp2(m - m_safe)
            w = tl.math.exp2(m_s - m_safe)
            l = l * alpha + tl.sum(w * l_s, 0)
            acc = acc * alpha + tl.sum(w[:, None] * a_s, 0)
            m = m_new
        if PDL:
            tl.extra.cuda.gdc_launch_dependents()
        tl.store(Out + row.to(tl.int64) * HEAD_DIM + d, (acc / l).to(Out.dtype.element_ty))


# fmt: on
def balanced_decode_attention(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    c_cache: Tensor,
    cache_seqlens: Tensor,
    acp: tuple[Tensor, float] | None,
    problem: CacheProblem,
    block_n: int,
    block_m: int,
    programs: int,
    num_stages: int | None = None,
) -> Tensor:
    """Plan, split and combine (see the module docstring); arguments as ``triton_decode.decode_attention``'s,
    with its row block ``block_m`` and ``programs`` (the split grid, at least one per group). (B, Tq, Hq, D)."""
    B, Tq, Hq, D = q.shape
    Tmax, Hkv, group = k_cache.shape[1], problem.kv_heads, problem.group
    chunks = triton.cdiv(Tq * group, block_m)
    groups = B * Hkv * chunks
    share = share_args(groups, programs)
    fanout, levels, stride0 = _search_shape(triton.cdiv(Tmax, block_n))
    lens = cache_seqlens.contiguous()
    u, log_eps_t = threshold_args(acp, B, Hq, q.device)
    row_lo = torch.empty(B * Tq * Hq, dtype=torch.int32, device=q.device)
    lo = torch.empty(groups, dtype=torch.int32, device=q.device)
    kept = torch.empty(groups, dtype=torch.int32, device=q.device)
    shape = dict(HQ=Hq, HKV=Hkv, TQ=Tq, GROUP=group, CHUNKS=chunks, BLOCK_M=block_m)
    _plan_kernel[(groups,)](
        q, c_cache, lens, u, log_eps_t, row_lo, lo, kept, *q.stride()[:3], *c_cache.stride(), *u.stride(),
        max_len=Tmax, **shape, HEAD_DIM=D, BLOCK_N=block_n, ACP=acp is not None, FANOUT=fanout, LEVELS=levels,
        STRIDE0=stride0, **pdl_args(q.device),
    )  # fmt: skip
    out = torch.empty(B, Tq, Hq, D, dtype=q.dtype, device=q.device)
    part_ml, part_acc = partials(programs, block_m, D, q.device)
    _balanced_split_kernel[(programs,)](
        q, k_cache, v_cache, c_cache, lens, row_lo, lo, kept, out, part_ml, part_acc,
        *q.stride()[:3], *k_cache.stride()[:3], *v_cache.stride()[:3], *c_cache.stride(),
        qk_scale=problem.sm_scale * 1.4426950408889634, max_len=Tmax, **shape, **share, HEAD_DIM=D,
        BLOCK_N=block_n, PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=NUM_WARPS, num_stages=num_stages or NUM_STAGES, **pdl_args(q.device),
    )  # fmt: skip
    combine(kept, part_ml, part_acc, out, shape, share)
    return out


def share_args(groups: int, programs: int) -> dict[str, int]:
    """The constants of ``_shares``: groups, their power-of-two padding, programs, blocks a split needs."""
    if programs < groups:
        raise ValueError(f"the balanced schedule needs at least one program per group ({groups}), got {programs}")
    return dict(NUM_GROUPS=groups, GROUPS_PAD=triton.next_power_of_2(groups), PROGRAMS=programs,
                MIN_BLOCKS=MIN_BLOCKS_PER_SPLIT)  # fmt: skip


def partials(programs: int, block_m: int, head_dim: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Float32 buffers of the programs' partials: (max, sum) and the unnormalised output of BLOCK_M rows each."""
    ml = torch.empty(programs * block_m * 2, dtype=torch.float32, device=device)
    return ml, torch.empty(programs * block_m, head_dim, dtype=torch.float32, device=device)


def combine(kept: Tensor, part_ml: Tensor, part_acc: Tensor, out: Tensor, shape: dict, share: dict) -> None:
    """Merge the partials of every row whose group had more than one split into ``out`` (B, Tq, Hq, D)."""
    B, Tq, Hq, D = out.shape
    _balanced_combine_kernel[(B * Tq * Hq,)](
        kept, part_ml, part_acc, out, **shape, **share, HEAD_DIM=D, SPLITS=COMBINE_SPLITS, **pdl_args(out.device)
    )  # fmt: skip
