"""The cumulative gate and its gradient in one Triton launch each (twin: ``gate.cumulative_gate`` + autograd).

Forward: c[h, t] = sum of log f[s, h] over the sequence's keys s <= t, in float64, written heads first, each
log f raised to ``gate.LOG_FGATE_FLOOR`` first; the same pass writes the kernels' key table KC
(``triton_kernels.table_rows``): each key's decay up to the last key of its block, c[j1] - c[j] <= 0, in q.k
units over the table scale.
Backward: with dL/dc = dcq (query rows, at their key positions) - dck (key columns), as the attention
kernels leave them, dL/dlog f[t, h] = sum over the sequence's key positions s >= t of dL/dc[h, s].
Forward: one program per (sequence, head) walks its sequence in chunks, carrying the running sum; it is bound by
the bytes of the key table it writes. Backward: one program per (sequence, head, chunk); each first sums the
chunks after its own in the order a single walk would (so the result is that walk's), then scans its chunk, so
the programs of one sequence run side by side (one launch each replaced ~8 small torch launches per call:
experiments/028-fewer-launches-per-call; the gradient's chunks in parallel, 20 -> 17 us at 24x64 4k, 44 -> 21
at 16k, where the scan's were slower: experiments/038-gate-scan-parallel-chunks). Gates below the floor get
gradient 0, as ``torch.clamp_min`` gives them.
"""
# fmt: off

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from .gate import LOG_FGATE_FLOOR
from .triton_kernels import KC_COLS, TABLE_LIMIT, table_rows
from .validate import Problem

_CHUNK = 1024  # rows per step of the scans (a multiple of every KC block): few serial steps per sequence
# A table value that saturates (at TABLE_LIMIT x S, in q.k units) still stands for a decay of at least this many
# nats: weight e^-2048 = 0 in any float, for any |logit| < ~970. Every table part is <= 0, so saturation is safe.
_TABLE_RANGE = 2048.0
# The largest |sm_scale q.k| for which that holds with room to spare (a saturated weight stays below
# e^-(2048 - 2 * 960) = e^-128 of the row's largest); ``forgetting_attention`` takes the PyTorch path beyond it.
LOGIT_LIMIT = 960.0


@functools.lru_cache(maxsize=64)  # one value per model in practice: no host arithmetic per call
def table_scale(sm_scale: float) -> float | None:
    """The power of two S by which the score tables divide their q.k-unit values (S multiplies them back
    exactly in the tensor cores), so that a saturated value still means weight 0; None where no fp16 power
    of two serves (sm_scale outside about [2e-6, 1e6]: the op then takes the PyTorch path)."""
    ratio = _TABLE_RANGE / (TABLE_LIMIT.value * sm_scale)
    if not 0.0 < ratio < math.inf:  # an extreme (accepted) sm_scale: no power of two either
        return None
    exponent = math.ceil(math.log2(ratio))
    return 2.0**exponent if -24 <= exponent <= 15 else None


@triton.jit
def gate_scan_kernel(G, C, KC, CU_K, stride_gt, stride_gh, stride_ch, stride_kct, scale, table_scale, floor,
                     H: tl.constexpr, CHUNK: tl.constexpr, KC_BLOCK: tl.constexpr):
    """C[h, k_start + t] = sum_{s <= t} max(G[k_start + s, h], floor) (float64), and KC's rows for blocks of
    KC_BLOCK keys (``scale`` = 1 / (sm_scale * table_scale)). Grid: (sequences x H,)."""
    seq = tl.program_id(0) // H
    h = tl.program_id(0) % H
    start = tl.load(CU_K + seq)
    length = tl.load(CU_K + seq + 1) - start
    Gb = G + start.to(tl.int64) * stride_gt + h * stride_gh
    Cb = C + h.to(tl.int64) * stride_ch + start
    KCb = KC + start.to(tl.int64) * stride_kct + h * KC_COLS
    offs = tl.arange(0, CHUNK)
    last = (tl.arange(0, KC_BLOCK) == KC_BLOCK - 1)[None, :]
    carry = tl.sum(tl.zeros([CHUNK], dtype=tl.float64), 0)
    for t0 in range(0, length, CHUNK):
        ok = t0 + offs < length
        x = tl.maximum(tl.load(Gb + (t0 + offs) * stride_gt, mask=ok, other=0.0).to(tl.float64), floor)
        c = tl.cumsum(x, 0) + carry
        tl.store(Cb + t0 + offs, c, mask=ok)
        carry += tl.sum(x, 0)
        # Chunks start on block boundaries; past the sequence's end x = 0, so a block's last column holds the
        # gate at its last key in the sequence.
        blocks = tl.reshape(c, (CHUNK // KC_BLOCK, KC_BLOCK))
        decay = tl.sum(tl.where(last, blocks, 0.0), 1)[:, None] - blocks
        tl.store(KCb + (t0 + offs)[:, None] * stride_kct + tl.arange(0, KC_COLS)[None, :],
                 table_rows(tl.reshape(decay, (CHUNK,)) * scale, table_scale, False), mask=ok[:, None])


@triton.jit
def _grad_chunk(DCQb, DCKb, s, k_len, off):
    """dL/dc at key positions s, float64: DCQ where a query sits there, minus DCK; 0 past the sequence."""
    ok = s < k_len
    x = tl.load(DCQb + s, mask=ok & (s >= off), other=0.0).to(tl.float64)
    return x - tl.load(DCKb + s, mask=ok, other=0.0).to(tl.float64)


@triton.jit
def gate_grad_kernel(DCQ, DCK, G, DG, CU_Q, CU_K, stride_qh, stride_kh, stride_gt, stride_gh, stride_dgt, floor,
                     H: tl.constexpr, CHUNK: tl.constexpr):
    """DG[k_start + t, h] = sum_{s >= t} (DCQ[h, query at key position s] - DCK[h, k_start + s]), summed in
    float64, stored in DG's dtype, for chunk program_id(1) of the sequence; 0 where G (the gates) is below the
    floor. Query i of a sequence sits at key position i + (Lk - Lq). Grid: (sequences x H, chunks)."""
    seq = tl.program_id(0) // H
    h = tl.program_id(0) % H
    t0 = tl.program_id(1) * CHUNK
    q_start = tl.load(CU_Q + seq)
    k_start = tl.load(CU_K + seq)
    k_len = tl.load(CU_K + seq + 1) - k_start
    if t0 >= k_len:
        return
    off = k_len - (tl.load(CU_Q + seq + 1) - q_start)
    DCQb = DCQ + h.to(tl.int64) * stride_qh + q_start - off  # indexed by key position
    DCKb = DCK + h.to(tl.int64) * stride_kh + k_start
    offs = tl.arange(0, CHUNK)
    chunks = tl.cdiv(k_len, CHUNK)
    carry = tl.sum(tl.zeros([CHUNK], dtype=tl.float64), 0)
    for i in range(0, chunks - 1 - tl.program_id(1)):  # the chunks after this one, last first
        carry += tl.sum(_grad_chunk(DCQb, DCKb, (chunks - 1 - i) * CHUNK + offs, k_len, off), 0)
    s = t0 + offs
    x = _grad_chunk(DCQb, DCKb, s, k_len, off)
    gate = tl.load(G + (k_start + s).to(tl.int64) * stride_gt + h * stride_gh, mask=s < k_len, other=0.0)
    grad = tl.where(gate < floor, 0.0, tl.cumsum(x, 0, reverse=True) + carry)
    tl.store(DG + k_start.to(tl.int64) * stride_dgt + h + s * stride_dgt, grad.to(DG.dtype.element_ty), mask=s < k_len)


def gate_scan(log_fgate: Tensor, problem: Problem, kc_block: int, scale: float) -> tuple[Tensor, Tensor]:
    """(total_k, Hq) float32 log forget gates -> c_t (Hq, total_k) float64, restarting at every sequence, and
    the key table KC (total_k, Hq, KC_COLS) fp16 on blocks of ``kc_block`` keys, with table scale ``scale``
    (``table_scale``)."""
    if _CHUNK % kc_block:
        raise ValueError(f"KC blocks of {kc_block} keys do not divide the scan's chunks of {_CHUNK}")
    total, heads = log_fgate.shape
    c_t = torch.empty(heads, total, dtype=torch.float64, device=log_fgate.device)
    kc = torch.empty(total, heads, KC_COLS.value, dtype=torch.float16, device=log_fgate.device)
    gate_scan_kernel[(problem.num_seqs * heads,)](
        G=log_fgate, C=c_t, KC=kc, CU_K=problem.cu_k, stride_gt=log_fgate.stride(0), stride_gh=log_fgate.stride(1),
        stride_ch=c_t.stride(0), stride_kct=kc.stride(0), scale=1.0 / (problem.sm_scale * scale), table_scale=scale,
        floor=LOG_FGATE_FLOOR, H=heads, CHUNK=_CHUNK, KC_BLOCK=kc_block,
        num_warps=8,  # a (CHUNK, 16) table tile per step
    )
    return c_t, kc


def gate_grad(dcq: Tensor, dck: Tensor, log_fgate: Tensor, problem: Problem) -> Tensor:
    """dcq (Hq, total_q), dck (Hq, total_k) float32, the gates (total_k, Hq) -> their gradient (total_k, Hq)
    float32 (0 for gates below ``LOG_FGATE_FLOOR``)."""
    heads, total = dck.shape
    dg = torch.empty(total, heads, dtype=torch.float32, device=dck.device)
    grid = (problem.num_seqs * heads, triton.cdiv(problem.max_k, _CHUNK))
    gate_grad_kernel[grid](
        DCQ=dcq, DCK=dck, G=log_fgate, DG=dg, CU_Q=problem.cu_q, CU_K=problem.cu_k, stride_qh=dcq.stride(0),
        stride_kh=dck.stride(0), stride_gt=log_fgate.stride(0), stride_gh=log_fgate.stride(1),
        stride_dgt=dg.stride(0), floor=LOG_FGATE_FLOOR, H=heads, CHUNK=_CHUNK,
    )
    return dg
