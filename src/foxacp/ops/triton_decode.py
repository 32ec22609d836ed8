"""Split-KV (flash-decoding) Triton kernels for ``forgetting_attention_with_kvcache``.

The grid is (sequence x KV head, split, row chunk). One program holds the rows (query i, head h) of one GQA
group, up to ``BLOCK_M`` of them (Tq x group rows folded into the M dimension of the dots, padded to 16), so
every K/V block it loads serves all the group's query heads and queries. It finds each row's ACP start
block (a search over the block-end values of c: c is non-increasing, so the kept blocks of a row are a
suffix), shares the blocks from the earliest start to the end among the splits evenly, and streams its
share, masking per row what that row prunes; the decays c_q - c_k come from the cache, in float32.
Splits write partial (max, sum, unnormalised output) in float32, which a second kernel merges; with one
split the first kernel writes the output itself. The grid depends only on the shapes, never on values:
a decode step captures in a CUDA graph.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import triton
import triton.language as tl
from torch import Tensor

from .acp import _constant
from .config import interpreting, pdl_args
from .validate import CacheProblem

LOG2E = tl.constexpr(1.4426950408889634)
MAX_ROWS = 64  # rows (queries x heads of a group) per program; more rows take more programs (row chunks)
PROGRAMS_PER_SM = 4  # split-KV target: programs in flight per multiprocessor (waves of equal work)
MIN_BLOCKS_PER_SPLIT = 4  # a split's share of the cache, at least; fewer blocks cost more partials than they save
FANOUT = 64  # candidates per level of the start search; 2 levels cover 4096 blocks (256k keys)
# Launch shape of the split kernel. Not yet measured (designed for an H200: 3 stages of a 64-key K and V block
# fit 2-4 programs per multiprocessor); `python -m foxacp.bench.decode_attention --splits/--stages` sweeps them.
NUM_WARPS, NUM_STAGES = 4, 3
# How a group's splits are sized: "even" (every group the same number), "balanced" (in proportion to its kept
# blocks, triton_balance.py), or "auto": balanced where it won in experiment 052 (H200, bf16, CUDA graphs), from
# shapes and settings alone so that a step's choice is fixed for its graph. With pruning, heads keep windows of
# very different lengths: balanced took 0.56-0.95x even's time at 24x64 and 0.96-1.06x at 32/8x128. Exact, every
# group has the same work: balanced won with 192 groups (0.84-0.88x) and lost with 64 or fewer (1.02-1.22x), so
# it is taken from one group per multiprocessor up.
SCHEDULE = "auto"
SCHEDULES = ("auto", "even", "balanced")


def check_schedule(name: str | None) -> str:
    """``name``, or ``SCHEDULE`` (read at call time: ``use_schedule`` may have set it) for None; raises ValueError
    for a name not in SCHEDULES."""
    name = name or SCHEDULE
    if name not in SCHEDULES:
        raise ValueError(f"decode schedule must be one of {SCHEDULES}, got {name!r}")
    return name


def resolve_schedule(name: str | None, *, pruning: bool, groups: int, device: torch.device) -> str:
    """The schedule a call runs, "even" or "balanced": ``check_schedule(name)``, "auto" resolved for a call that
    prunes or not, over ``groups`` (sequence, KV head, row chunk) groups on ``device``."""
    name = check_schedule(name)
    if name != "auto":
        return name
    return "balanced" if pruning or groups >= _sms(device) else "even"


@contextlib.contextmanager
def use_schedule(name: str | None) -> Iterator[None]:
    """Within the block, decode calls that name no schedule take ``name`` (None leaves the default)."""
    global SCHEDULE
    previous, SCHEDULE = SCHEDULE, check_schedule(name)
    try:
        yield
    finally:
        SCHEDULE = previous


# fmt: off
@triton.jit
def _first_kept_block(Cb, c_q, delta, h, row_ok, L, stride_ct, stride_ch, BLOCK_N: tl.constexpr,
                      FANOUT: tl.constexpr, LEVELS: tl.constexpr, STRIDE0: tl.constexpr, BLOCK_M: tl.constexpr):
    """Per row, the first key block with c_q - c[block end] >= delta (a FANOUT-ary search, LEVELS levels).

    At each level a row's FANOUT candidates are the last blocks of equal sub-ranges of its remaining range;
    the kept ones are a suffix, so the number of pruned candidates says which sub-range holds the start.
    One gather of FANOUT x BLOCK_M block-end values per level, all rows at once.
    """
    last = tl.cdiv(L, BLOCK_N) - 1
    lo = tl.zeros([BLOCK_M], dtype=tl.int32)
    step = STRIDE0
    for _ in tl.static_range(LEVELS):
        cand = lo[None, :] + (tl.arange(0, FANOUT)[:, None] + 1) * step - 1
        end = tl.minimum(tl.minimum(cand, last) * BLOCK_N + BLOCK_N, L) - 1
        c_end = tl.load(Cb + end.to(tl.int64) * stride_ct + h[None, :] * stride_ch, mask=row_ok[None, :], other=0.0)
        pruned = (c_q[None, :] - c_end) < delta[None, :]
        lo += tl.sum(pruned.to(tl.int32), axis=0) * step
        step = step // FANOUT
    return tl.where(row_ok, lo, last + 1)


@triton.jit
def _attend_block(q, k, v, c_q, c_k, keep, m_i, l_i, acc, qk_scale, PRECISION: tl.constexpr):
    """One key block's online-softmax update of the rows' (max, sum, output), scores in log2 units."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale + (c_q[:, None] - c_k) * LOG2E
    s = tl.where(keep, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing kept yet: no -inf - -inf
    p = tl.math.exp2(s - m_safe[:, None])
    alpha = tl.math.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc


@triton.jit
def _store_rows(Out, Part_ml, Part_acc, acc, m_i, l_i, row, split, row_ok, NUM_SPLITS: tl.constexpr,
                HEAD_DIM: tl.constexpr):
    """The rows' output (one split), or their partial (max, sum, output) for the combine kernel."""
    d = tl.arange(0, HEAD_DIM)
    if NUM_SPLITS == 1:
        o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(Out + row[:, None].to(tl.int64) * HEAD_DIM + d[None, :], o.to(Out.dtype.element_ty),
                 mask=row_ok[:, None])
    else:
        part = row * NUM_SPLITS + split
        tl.store(Part_ml + part * 2, m_i, mask=row_ok)
        tl.store(Part_ml + part * 2 + 1, l_i, mask=row_ok)
        tl.store(Part_acc + part[:, None].to(tl.int64) * HEAD_DIM + d[None, :], acc, mask=row_ok[:, None])


@triton.jit
def _group_rows(Q, C, Lens, b, kvh, chunk, stride_qb, stride_qt, stride_qh, stride_cb, stride_ct, stride_ch,
                max_len, TQ: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """The rows (query i, head h) of row chunk ``chunk`` of a GQA group: their mask, query and head indices,
    the sequence's length L, their positions, the sequence's c base, their c at their positions, and q."""
    r = chunk * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = r < TQ * GROUP
    i = r // GROUP
    h = kvh * GROUP + r % GROUP
    L = tl.minimum(tl.maximum(tl.load(Lens + b), TQ), max_len)  # valid lengths pass; others stay in bounds
    pos = L - TQ + i
    b64 = b.to(tl.int64)  # 64-bit batch bases: a cache may exceed 2^31 elements
    Cb = C + b64 * stride_cb
    c_q = tl.load(Cb + pos.to(tl.int64) * stride_ct + h * stride_ch, mask=row_ok, other=0.0)
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b64 * stride_qb + i[:, None] * stride_qt + h[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None], other=0.0)
    return row_ok, i, h, L, pos, Cb, c_q, q


@triton.jit
def _row_starts(Cb, U, LogEps, b, h, c_q, row_ok, L, stride_ct, stride_ch, stride_ub, stride_uh, ACP: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FANOUT: tl.constexpr, LEVELS: tl.constexpr,
                STRIDE0: tl.constexpr):
    """Each row's first kept block: the ACP start, or 0 when exact."""
    if ACP:
        # acp.threshold's float64 expression, in the same order, rounded to float32 as the twin rounds it.
        u = tl.load(U + b * stride_ub + h * stride_uh, mask=row_ok, other=0.0)
        delta = ((-2.0 * u - tl.log(L.to(tl.float64))) + tl.load(LogEps)).to(tl.float32)
        row_lo = _first_kept_block(Cb, c_q, delta, h, row_ok, L, stride_ct, stride_ch, BLOCK_N, FANOUT, LEVELS,
                                   STRIDE0, BLOCK_M)
    else:
        row_lo = tl.zeros([BLOCK_M], dtype=tl.int32)
    return row_lo


@triton.jit
def _attend_range(q, Kb, Vb, Cb, c_q, h, pos, row_ok, row_lo, L, start, stop, stride_kt, stride_vt, stride_ct,
                  stride_ch, qk_scale, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  PRECISION: tl.constexpr):
    """The rows' (max, sum, unnormalised output) over key blocks [start, stop), each row masking the blocks
    before its own start and the keys after its position."""
    d = tl.arange(0, HEAD_DIM)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for blk in range(start, stop):
        n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
        n64 = n.to(tl.int64)  # one sequence's cache may span 2^31 elements (a strided or interleaved layout)
        cached = n < L  # past the length the cache holds garbage: never read it (0 * NaN is NaN)
        k = tl.load(Kb + n64[:, None] * stride_kt + d[None, :], mask=cached[:, None], other=0.0)
        v = tl.load(Vb + n64[:, None] * stride_vt + d[None, :], mask=cached[:, None], other=0.0)
        keep = (n[None, :] <= pos[:, None]) & (row_ok & (blk >= row_lo))[:, None]
        c_k = tl.load(Cb + n64[None, :] * stride_ct + h[:, None] * stride_ch, mask=keep, other=0.0)
        m_i, l_i, acc = _attend_block(q, k, v, c_q, c_k, keep, m_i, l_i, acc, qk_scale, PRECISION)
    return m_i, l_i, acc


@triton.jit
def _split_kernel(Q, K, V, C, Lens, U, LogEps, Out, Part_ml, Part_acc,
                  stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
                  stride_cb, stride_ct, stride_ch, stride_ub, stride_uh, qk_scale, max_len,
                  HQ: tl.constexpr, HKV: tl.constexpr, TQ: tl.constexpr, GROUP: tl.constexpr,
                  HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr,
                  ACP: tl.constexpr, FANOUT: tl.constexpr, LEVELS: tl.constexpr, STRIDE0: tl.constexpr,
                  PRECISION: tl.constexpr, PDL: tl.constexpr):
    if PDL:  # launched early (programmatic dependent launch): q, the cache and c come from the kernels before
        tl.extra.cuda.gdc_wait()
    b = tl.program_id(0) // HKV
    kvh = tl.program_id(0) % HKV
    split = tl.program_id(1)
    row_ok, i, h, L, pos, Cb, c_q, q = _group_rows(Q, C, Lens, b, kvh, tl.program_id(2), stride_qb, stride_qt,
                                                   stride_qh, stride_cb, stride_ct, stride_ch, max_len, TQ, GROUP,
                                                   HEAD_DIM, BLOCK_M)
    row_lo = _row_starts(Cb, U, LogEps, b, h, c_q, row_ok, L, stride_ct, stride_ch, stride_ub, stride_uh, ACP,
                         BLOCK_M, BLOCK_N, FANOUT, LEVELS, STRIDE0)
    num_blocks = tl.cdiv(L, BLOCK_N)
    lo = tl.min(tl.where(row_ok, row_lo, num_blocks), axis=0)
    # The kept blocks, shared evenly: with ACP every split still gets work, until there are fewer kept blocks
    # than splits (the rest exit at once with a neutral partial).
    per_split = tl.cdiv(num_blocks - lo, NUM_SPLITS)
    start = lo + split * per_split
    stop = tl.minimum(start + per_split, num_blocks)
    b64 = b.to(tl.int64)
    m_i, l_i, acc = _attend_range(q, K + b64 * stride_kb + kvh * stride_kh, V + b64 * stride_vb + kvh * stride_vh,
                                  Cb, c_q, h, pos, row_ok, row_lo, L, start, stop, stride_kt, stride_vt, stride_ct,
                                  stride_ch, qk_scale, HEAD_DIM, BLOCK_M, BLOCK_N, PRECISION)
    if PDL:  # every load is done: the next kernel may start its launch (it waits for this one's stores)
        tl.extra.cuda.gdc_launch_dependents()
    row = (b * TQ + i) * HQ + h  # (sequence, query, head) index into the (B, Tq, Hq, ...) outputs
    _store_rows(Out, Part_ml, Part_acc, acc, m_i, l_i, row, split, row_ok, NUM_SPLITS, HEAD_DIM)


@triton.jit
def _combine_kernel(Part_ml, Part_acc, Out, NUM_SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr,
                    HEAD_DIM: tl.constexpr, PDL: tl.constexpr):
    """Merge one row's split partials: o = sum_s 2^(m_s - m) acc_s / sum_s 2^(m_s - m) l_s."""
    if PDL:
        tl.extra.cuda.gdc_wait()
    row = tl.program_id(0).to(tl.int64)
    s = tl.arange(0, SPLITS_PAD)
    ok = s < NUM_SPLITS
    part = row * NUM_SPLITS + s
    m_s = tl.load(Part_ml + part * 2, mask=ok, other=float("-inf"))
    l_s = tl.load(Part_ml + part * 2 + 1, mask=ok, other=0.0)
    d = tl.arange(0, HEAD_DIM)
    acc = tl.load(Part_acc + part[:, None] * HEAD_DIM + d[None, :], mask=ok[:, None], other=0.0)
    m = tl.max(m_s, 0)
    w = tl.math.exp2(m_s - tl.where(m == float("-inf"), 0.0, m))  # empty splits (m_s = -inf) weigh 0
    o = tl.sum(w[:, None] * acc, 0) / tl.sum(w * l_s, 0)
    if PDL:  # the partials are read and used: the next kernel may launch, even one that does not wait
        tl.extra.cuda.gdc_launch_dependents()
    tl.store(Out + row * HEAD_DIM + d, o.to(Out.dtype.element_ty))


# fmt: on
@functools.lru_cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _sms(device: torch.device) -> int:
    """Multiprocessors of ``device``; on the CPU (interpreter) 4, so that tests see several splits."""
    if device.type == "cuda" and not interpreting():
        return _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 4


def num_splits(programs: int, max_len: int, device: torch.device, block_n: int) -> int:
    """Splits per (sequence, KV head, row chunk): enough programs to fill the GPU, from shapes alone.

    ``programs`` is the grid without splits (B x Hkv x row chunks).
    """
    most = max(1, triton.cdiv(max_len, block_n * MIN_BLOCKS_PER_SPLIT))
    return max(1, min(triton.cdiv(PROGRAMS_PER_SM * _sms(device), programs), most))


def balanced_programs(groups: int, max_len: int, device: torch.device, block_n: int, splits: int | None) -> int:
    """The balanced schedule's grid: ``splits`` programs per group when given; else the even schedule's grid, and
    at least a GPU's worth beyond one per group, so that long groups get more programs at any batch size."""
    if splits:
        return groups * splits
    even = groups * num_splits(groups, max_len, device, block_n)
    return max(even, groups + PROGRAMS_PER_SM * _sms(device))


def balanced_grid(
    schedule: str | None,
    *,
    pruning: bool,
    groups: int,
    max_len: int,
    device: torch.device,
    block_n: int,
    splits: int | None,
) -> int | None:
    """The balanced kernel's program count when a call over ``groups`` groups runs it (``resolve_schedule`` says
    balanced and ``balanced_programs`` gives more programs than groups), else None: the even schedule runs."""
    if resolve_schedule(schedule, pruning=pruning, groups=groups, device=device) != "balanced":
        return None
    programs = balanced_programs(groups, max_len, device, block_n, splits)
    return programs if programs > groups else None


def threshold_args(acp: tuple[Tensor, float] | None, B: int, Hq: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The kernels' U (B, Hq) float64 and log eps (1, 1) float64 (in memory: a scalar argument would be fp32);
    zeros when exact (the kernels then never read them)."""
    u, log_eps = acp if acp is not None else (_constant(0.0, (B, Hq), device), 0.0)
    return u, _constant(float(log_eps), (1, 1), device)


def _search_shape(max_blocks: int) -> tuple[int, int, int]:
    """(fanout, levels, first step) of the start search over up to ``max_blocks`` blocks."""
    levels = 1
    while FANOUT**levels < max_blocks:
        levels += 1
    fanout = 16  # the smallest power of two that still covers max_blocks in that many levels (fewer loads)
    while fanout**levels < max_blocks:
        fanout *= 2
    return fanout, levels, fanout ** (levels - 1)


def decode_attention(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    c_cache: Tensor,
    cache_seqlens: Tensor,
    acp: tuple[Tensor, float] | None,
    problem: CacheProblem,
    block_n: int,
    splits: int | None = None,
    num_stages: int | None = None,
    schedule: str | None = None,
) -> Tensor:
    """Run the split and combine kernels; inputs as validated by ``kvcache.check_cache_inputs``.

    Args:
        acp: None for exact attention, or (U, log_eps): the logit bound, (B, Hq) float64 (any strides), and
            the log tolerance; the kernel forms the threshold delta = -2U - log(L) + log_eps itself.
        block_n: keys per block (the ACP block grid).
        splits: splits per (sequence, KV head, row chunk); None picks ``num_splits`` (benchmarks sweep it), or
            for the balanced schedule ``balanced_programs``.
        num_stages: software pipeline depth of the key loop; None takes ``NUM_STAGES``.
        schedule: "even", "balanced" (the same grid of splits x groups programs, shared out by kept blocks) or
            "auto" (``resolve_schedule``); None takes ``SCHEDULE``.
    Returns:
        (B, Tq, Hq, D) in q's dtype.
    """
    B, Tq, Hq, D = q.shape
    Tmax, Hkv, group = k_cache.shape[1], problem.kv_heads, problem.group
    # The kernel reads rows of D contiguous values; any other strides are read in place.
    q, k_cache, v_cache = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k_cache, v_cache))
    rows = Tq * group
    block_m = max(16, min(MAX_ROWS, triton.next_power_of_2(rows)))
    chunks = triton.cdiv(rows, block_m)
    groups = B * Hkv * chunks
    programs = balanced_grid(
        schedule, pruning=acp is not None, groups=groups, max_len=Tmax, device=q.device, block_n=block_n, splits=splits
    )
    if programs is not None:
        from .triton_balance import balanced_decode_attention  # it imports this module's pieces

        return balanced_decode_attention(
            q, k_cache, v_cache, c_cache, cache_seqlens, acp, problem, block_n, block_m, programs, num_stages
        )
    splits = splits or num_splits(groups, Tmax, q.device, block_n)
    fanout, levels, stride0 = _search_shape(triton.cdiv(Tmax, block_n))
    out = torch.empty(B, Tq, Hq, D, dtype=q.dtype, device=q.device)
    part_ml = part_acc = out  # unused with one split
    if splits > 1:
        part_ml = torch.empty(B * Tq * Hq * splits * 2, dtype=torch.float32, device=q.device)
        part_acc = torch.empty(B * Tq * Hq * splits, D, dtype=torch.float32, device=q.device)
    lens = cache_seqlens.contiguous()
    u, log_eps_t = threshold_args(acp, B, Hq, q.device)
    _split_kernel[(B * Hkv, splits, chunks)](
        q, k_cache, v_cache, c_cache, lens, u, log_eps_t, out, part_ml, part_acc,
        *q.stride()[:3], *k_cache.stride()[:3], *v_cache.stride()[:3], *c_cache.stride(), *u.stride(),
        qk_scale=problem.sm_scale * 1.4426950408889634, max_len=Tmax,
        HQ=Hq, HKV=Hkv, TQ=Tq, GROUP=group, HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n, NUM_SPLITS=splits,
        ACP=acp is not None, FANOUT=fanout, LEVELS=levels, STRIDE0=stride0,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=NUM_WARPS, num_stages=num_stages or NUM_STAGES, **pdl_args(q.device),
    )  # fmt: skip
    if splits > 1:
        combine_splits(part_ml, part_acc, out, splits)
    return out


def combine_splits(part_ml: Tensor, part_acc: Tensor, out: Tensor, splits: int) -> None:
    """Merge the ``splits`` partials of every row (the even schedule's) into ``out`` (B, Tq, Hq, D)."""
    B, Tq, Hq, D = out.shape
    _combine_kernel[(B * Tq * Hq,)](
        part_ml, part_acc, out, NUM_SPLITS=splits, SPLITS_PAD=triton.next_power_of_2(splits), HEAD_DIM=D,
        **pdl_args(out.device),
    )  # fmt: skip
