"""Autograd wrapper around the Triton kernels (forward, dK/dV, dQ) in the packed layout."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from triton.tools.tensor_descriptor import TensorDescriptor

from . import triton_kernels as kern
from .acp import AcpPlan
from .config import Blocks, KernelConfig, head_group
from .search import run_plan
from .triton_gate import gate_grad, gate_scan
from .validate import Problem, first_order_only

_LOG2E = math.log2(math.e)


def _grid(num_sh: int, length: int, block: int, head_group: int) -> tuple[int, int, int]:
    """Grid (heads per group, blocks along the longest sequence, groups) over num_sh (sequence, head) pairs.

    See ``triton_kernels._program``; CUDA caps the second and third dimensions at 65535.
    """
    blocks = math.ceil(length / block)
    if blocks > 65535:
        raise ValueError(f"a sequence of {length} tokens needs {blocks} blocks of {block}; at most 65535 fit a launch")
    group = max(min(head_group, num_sh), math.ceil(num_sh / 65535))
    return (group, blocks, math.ceil(num_sh / group))


def _heads(b: Blocks, t: Tensor, length: int, heads: int = 1) -> int:
    """Pairs side by side for a kernel with blocks ``b`` whose (sequence, head) pair streams ``length`` rows
    of two tensors like ``t`` (K and V, or Q and dO) and of a score table, for ``heads`` heads each."""
    row_bytes = 2 * t.shape[2] * t.element_size() + 2 * kern.KC_COLS.value
    return head_group(b, t.device, length, row_bytes * heads)


def _tma_ready(t: Tensor) -> Tensor:
    """``t`` (total, H, D) itself if the bulk-copy engine can read it as a (total, H * D) matrix, else a fresh
    copy (contiguous and 16-byte aligned: ``contiguous()`` would return a misaligned contiguous view as is)."""
    heads_adjacent = t.stride(1) == t.shape[2] or t.shape[1] == 1
    ok = t.stride(2) == 1 and heads_adjacent and (t.stride(0) * t.element_size()) % 16 == 0
    return t if ok and t.data_ptr() % 16 == 0 else t.clone(memory_format=torch.contiguous_format)


def _desc(t: Tensor, rows: int) -> TensorDescriptor:
    """Tensor descriptor over ``t`` (total, H, D) viewed as (total, H * D), read in (rows, D) blocks.

    Blocks are addressed by (row, head * D); rows past the end read as zeros (rows of a neighbouring
    packed sequence are read as they are, and every kernel masks them).
    """
    total, heads, dim = t.shape
    return TensorDescriptor(t, [total, heads * dim], [t.stride(0), 1], [rows, dim])


def _uniform(problem: Problem) -> dict:
    """The kernels' sequence-length arguments: a uniform batch passes its lengths (no loads of the offsets)."""
    if problem.uniform:
        return dict(seq_q=problem.max_q, seq_k=problem.max_k, UNIFORM=True)
    return dict(seq_q=0, seq_k=0, UNIFORM=False)


def _qc_table(c_t: Tensor, lse: Tensor, problem: Problem, block: int, scale: float) -> Tensor:
    """The query table QC for blocks of ``block`` rows: (total_q, Hq, 16) fp16 (``triton_kernels.table_rows``),
    with table scale ``scale`` (``triton_gate.table_scale``).

    The tensor-core product of a QC row and a KC row adds both rows' values to q.k, so the backward kernels
    pay no per-score add for the gate nor the LSE. KC comes from the gate scan (``triton_gate.gate_scan``).
    """
    heads, total = lse.shape
    tab = torch.empty(total, heads, kern.KC_COLS.value, dtype=torch.float16, device=c_t.device)
    _, blocks, _ = _grid(1, problem.max_q, block, 1)
    kern.qc_table_kernel[(problem.num_seqs * heads, blocks)](
        C=c_t,
        LSE=lse,
        TAB=tab,
        CU_Q=problem.cu_q,
        CU_K=problem.cu_k,
        stride_ch=c_t.stride(0),
        stride_lh=lse.stride(0),
        stride_tt=tab.stride(0),
        scale=1.0 / (problem.sm_scale * scale),
        table_scale=scale,
        H=heads,
        BLOCK=block,
        **_uniform(problem),
    )
    return tab


def _plan_args(plan: AcpPlan | None, which: str, problem: Problem) -> tuple[Tensor, int, int]:
    """The plan table ``which`` and its strides; without a plan, any int32 tensor (the kernels never read it)."""
    if plan is None:
        return problem.cu_q, 0, 0
    t = getattr(plan, which)
    return t, t.stride(0), t.stride(1)


# How far (nats) the gate may fall around the diagonal for the score tables to serve it: they round to 2^-24 of
# that, ~1.5e-5 nats at 256 (below half precision's own rounding) and ~1e-6 at 16 for float32 inputs; steeper
# regions take the exact loops (experiments/045-exact-decay-tables).
_TABLE_RANGE = {torch.float16: 256.0, torch.bfloat16: 256.0, torch.float32: 16.0}


def _common(problem: Problem, plan: AcpPlan | None, cfg: KernelConfig, dtype: torch.dtype) -> dict:
    """Arguments every attention kernel takes alike."""
    return dict(
        CU_Q=problem.cu_q,
        CU_K=problem.cu_k,
        table_range=_TABLE_RANGE[dtype],
        qk_scale=problem.sm_scale * _LOG2E,
        GROUP=problem.group,
        HEAD_DIM=problem.head_dim,
        TILE_M=cfg.tile_m,
        TILE_N=cfg.tile_n,
        ACP=plan is not None,
    )


def _forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    c_t: Tensor,
    kc: Tensor,
    problem: Problem,
    plan: AcpPlan | None,
    cfg: KernelConfig,
    scale: float,
):
    o = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # contiguous: the compiled op's fake says so
    lse = torch.empty(problem.n_heads, q.shape[0], dtype=torch.float32, device=q.device)
    kv_lo, s_n, s_h = _plan_args(plan, "kv_lo", problem)
    b = cfg.fwd
    num_sh = problem.num_seqs * problem.n_heads
    kern.fwd_kernel[_grid(num_sh, problem.max_q, b.block_m, _heads(b, k, problem.max_k))](
        desc_q=_desc(q, b.block_m),
        desc_k=_desc(k, b.block_n),
        desc_v=_desc(v, b.block_n),
        desc_kc=_desc(kc, b.block_n),
        desc_ks=_desc(k, b.sub),
        desc_vs=_desc(v, b.sub),
        C=c_t,
        O=o,
        LSE=lse,
        KV_LO=kv_lo,
        num_sh=num_sh,
        stride_ot=o.stride(0),
        stride_oh=o.stride(1),
        stride_ch=c_t.stride(0),
        stride_lh=lse.stride(0),
        stride_lo_n=s_n,
        stride_lo_h=s_h,
        table_scale=scale,
        H=problem.n_heads,
        BLOCK_M=b.block_m,
        BLOCK_N=b.block_n,
        SUB_N=b.sub,
        **_common(problem, plan, cfg, q.dtype),
        **_uniform(problem),
        **b.launch(),
    )
    return o, lse


def _backward(
    do: Tensor,
    q,
    k,
    v,
    log_fgate,
    c_t,
    o,
    lse,
    kc,
    problem: Problem,
    plan: AcpPlan | None,
    cfg: KernelConfig,
    scale: float,
):
    do = _tma_ready(do)
    delta = torch.empty(problem.n_heads, q.shape[0], dtype=torch.float32, device=q.device)  # written by dq_kernel
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))  # contiguous, as o
    dcq = torch.empty(problem.n_heads, q.shape[0], dtype=torch.float32, device=q.device)
    dck = torch.empty(problem.n_heads, k.shape[0], dtype=torch.float32, device=q.device)
    common = dict(
        C=c_t,
        DELTA=delta,
        LSE=lse,
        stride_ch=c_t.stride(0),
        stride_lh=lse.stride(0),
        sm_scale=problem.sm_scale,
        KC_BLOCK=cfg.fwd.block_n,
        **_common(problem, plan, cfg, q.dtype),
    )

    # Both backward kernels read the same two tables (QC on dQ's query blocks, the forward's KC) and so form
    # the same scores. dQ runs first: it also computes delta = rowsum(dO * O), which dK/dV reads. (dQ building
    # QC itself saves this launch but made its loop 14-17% slower: experiments/034-small-call-costs.)
    b = cfg.dq_for(problem.max_k)
    qc_block = b.block_m  # QC's blocks: dQ's query blocks, which dK/dV's divide
    qc = _qc_table(c_t, lse, problem, qc_block, scale)

    kv_lo, s_n, s_h = _plan_args(plan, "kv_lo", problem)
    num_sh = problem.num_seqs * problem.n_heads
    kern.dq_kernel[_grid(num_sh, problem.max_q, b.block_m, _heads(b, k, problem.max_k))](
        Q=q,
        desc_k=_desc(k, b.block_n),
        desc_v=_desc(v, b.block_n),
        desc_ks=_desc(k, b.sub),
        desc_vs=_desc(v, b.sub),
        QC=qc,
        desc_kc=_desc(kc, b.block_n),
        O=o,
        DO=do,
        DQ=dq,
        DCQ=dcq,
        KV_LO=kv_lo,
        num_sh=num_sh,
        stride_qt=q.stride(0),
        stride_qh=q.stride(1),
        stride_qct=qc.stride(0),
        stride_ot=o.stride(0),
        stride_oh=o.stride(1),
        stride_dot=do.stride(0),
        stride_doh=do.stride(1),
        stride_dqt=dq.stride(0),
        stride_dqh=dq.stride(1),
        stride_lo_n=s_n,
        stride_lo_h=s_h,
        H=problem.n_heads,
        BLOCK_M=b.block_m,
        BLOCK_N=b.block_n,
        SUB_N=b.sub,
        **common,
        **b.launch(),
    )

    q_hi, s_n, s_h = _plan_args(plan, "q_hi", problem)
    b = cfg.dkdv_for(problem.max_k)
    num_sh = problem.num_seqs * problem.kv_heads
    kern.dkdv_kernel[_grid(num_sh, problem.max_k, b.block_n, _heads(b, q, problem.max_q, problem.group))](
        desc_q=_desc(q, b.block_m),
        desc_qs=_desc(q, b.sub),
        K=k,
        V=v,
        KC=kc,
        desc_do=_desc(do, b.block_m),
        desc_dos=_desc(do, b.sub),
        desc_qc=_desc(qc, b.block_m),
        DK=dk,
        DV=dv,
        DCK=dck,
        Q_HI=q_hi,
        num_sh=num_sh,
        stride_kt=k.stride(0),
        stride_kh=k.stride(1),
        stride_vt=v.stride(0),
        stride_vh=v.stride(1),
        stride_kct=kc.stride(0),
        stride_dkt=dk.stride(0),
        stride_dkh=dk.stride(1),
        stride_dvt=dv.stride(0),
        stride_dvh=dv.stride(1),
        stride_hi_n=s_n,
        stride_hi_h=s_h,
        HKV=problem.kv_heads,
        BLOCK_M=b.block_m,
        BLOCK_N=b.block_n,
        QC_BLOCK=qc_block,
        SUB_M=b.sub,
        **common,
        **_uniform(problem),
        **b.launch(),
    )

    # dL/dlog f: the reverse cumulative sum of dL/dc, where query i (at key position i + Lk - Lq) gains its
    # row sum and key j loses its column sum.
    return dq, dk, dv, gate_grad(dcq, dck, log_fgate, problem)


def prepare(
    q: Tensor,
    k: Tensor,
    log_fgate: Tensor,
    problem: Problem,
    log_eps: float | None,
    qk_bound: float | Tensor | None,
    cfg: KernelConfig,
    scale: float,
) -> tuple[Tensor, Tensor, AcpPlan | None]:
    """What the kernels read besides q, k, v: the gate's scan (c_t, the key table KC; one launch) and, with
    ``log_eps``, the ACP plan. Shapes as in ``triton_attention``."""
    c_t, kc = gate_scan(log_fgate.detach().reshape(-1, problem.n_heads), problem, cfg.fwd.block_n, scale)
    plan = None
    if log_eps is not None:
        qp, kp = (t.detach().reshape(-1, *t.shape[2:]) for t in (q, k))
        plan = run_plan(qp, kp, c_t, problem, log_eps, qk_bound, cfg.tile_m, cfg.tile_n)
    return c_t, kc, plan


def packed(*ts: Tensor) -> list[Tensor]:
    """(B, T, H, D) tensors as the kernels read them: (B * T, H, D), copied only where the bulk-copy engine
    cannot read them in place (``_tma_ready``)."""
    return [_tma_ready(t.reshape(-1, *t.shape[2:])) for t in ts]


def backward_unpacked(do, q, k, v, log_fgate, c_t, o, lse, kc, problem, plan, cfg, scale) -> list[Tensor]:
    """``_backward`` on packed q, k, v, o (B * T, H, D), gates (B * T, Hq) and dO in any (B, Tq, Hq, D)
    layout -> dq, dk, dv (B * T, H, D) and the gates' gradient (B * T, Hq)."""
    return _backward(do.reshape(o.shape), q, k, v, log_fgate, c_t, o, lse, kc, problem, plan, cfg, scale)


class _TritonForgettingAttention(torch.autograd.Function):
    # Takes and returns the unpacked (B, T, H, D) tensors and packs them inside, so the autograd graph holds
    # this one node and no views around it.
    @staticmethod
    def forward(ctx, q, k, v, log_fgate, c_t, kc, problem, plan, cfg, scale):
        qp, kp, vp = packed(q, k, v)
        o, lse = _forward(qp, kp, vp, c_t, kc, problem, plan, cfg, scale)
        gp = log_fgate.detach().reshape(-1, problem.n_heads)
        ctx.save_for_backward(qp, kp, vp, gp, c_t, o, lse, kc)
        ctx.problem, ctx.plan, ctx.cfg, ctx.scale = problem, plan, cfg, scale
        ctx.shapes = q.shape, k.shape, log_fgate.shape
        return o.view(q.shape)

    @staticmethod
    @first_order_only  # its kernels record no graph: a double backward raises instead of dropping terms
    def backward(ctx, do):
        qp, kp, vp, gp, c_t, o, lse, kc = ctx.saved_tensors
        saved = qp, kp, vp, gp, c_t, o, lse, kc, ctx.problem, ctx.plan, ctx.cfg, ctx.scale
        dq, dk, dv, dg = backward_unpacked(do, *saved)
        q_shape, k_shape, g_shape = ctx.shapes
        grads = dq.view(q_shape), dk.view(k_shape), dv.view(k_shape), dg.view(g_shape)
        return *grads, None, None, None, None, None, None


def triton_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_fgate: Tensor,
    c_t: Tensor,
    kc: Tensor,
    problem: Problem,
    plan: AcpPlan | None,
    cfg: KernelConfig,
    scale: float,
) -> Tensor:
    """Forgetting attention through the Triton kernels.

    Args:
        q: (B, Tq, Hq, D); k, v: (B, Tk, Hkv, D) (packed batches: B = 1); log_fgate: (B, Tk, Hq) float32;
        c_t: (Hq, total_k) float64, its per-sequence cumulative sum, and kc: (total_k, Hq, 16) fp16, the key
            table on the forward's key blocks (both from ``triton_gate.gate_scan``), not differentiated: the
            gradient reaches ``log_fgate`` directly; scale: the tables' scale (``triton_gate.table_scale``).
    Returns:
        (B, Tq, Hq, D) in q's dtype; differentiable in q, k, v and log_fgate.
    """
    return _TritonForgettingAttention.apply(q, k, v, log_fgate, c_t, kc, problem, plan, cfg, scale)
