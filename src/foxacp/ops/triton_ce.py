"""Cross-entropy over one chunk of logits in two Triton launches (twin: ``linear_ce.chunk_stats`` / ``chunk_grad``).

Stats: per row, log-sum-exp over the vocabulary in float32 (one pass: running maximum and rescaled sum) and the
loss lse - logit[label]. Grad: per row, in place, logit -> g * (softmax - onehot(label)) in the logits' dtype.
One program per row walks the vocabulary in blocks; both are bound by the bytes of the logits (2 + 4 bytes per
bf16 logit in all), where the PyTorch twin makes a handful of float32 passes over each chunk.
"""
# fmt: off

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

_MAX_BLOCK = 2048  # vocabulary entries per step: 4 KB of bf16 per row, enough in flight to stream at full speed


@triton.jit
def ce_stats_kernel(LOGITS, LABELS, LSE, LOSS, stride_row, V, ignore_index, BLOCK: tl.constexpr):
    """LSE[r] = log sum_v exp(LOGITS[r, v]) (float32); LOSS[r] = LSE[r] - LOGITS[r, LABELS[r]], 0 where the label
    is ignore_index and NaN where it is out of [0, V) (so a bad label cannot pass unseen). Grid: (rows,)."""
    row = tl.program_id(0).to(tl.int64)
    base = LOGITS + row * stride_row
    offs = tl.arange(0, BLOCK)
    m = tl.max(tl.full([BLOCK], float("-inf"), tl.float32), 0)
    s = tl.sum(tl.zeros([BLOCK], dtype=tl.float32), 0)
    for v0 in range(0, V, BLOCK):
        x = tl.load(base + v0 + offs, mask=v0 + offs < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        # -inf while every logit so far is -inf (fp16 overflow): shift by 0 there, not -inf - -inf = NaN.
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - shift) + tl.sum(tl.exp(x - shift), 0)
        m = m_new
    lse = m + tl.log(s)
    label = tl.load(LABELS + row)
    valid = (label >= 0) & (label < V)
    target = tl.load(base + label, mask=valid, other=float("nan")).to(tl.float32)
    tl.store(LSE + row, lse)
    tl.store(LOSS + row, tl.where(label == ignore_index, 0.0, lse - target))


@triton.jit
def ce_grad_kernel(LOGITS, LABELS, LSE, GRAD, stride_row, V, ignore_index, BLOCK: tl.constexpr):
    """In place: LOGITS[r, v] <- GRAD[r] * (exp(LOGITS[r, v] - LSE[r]) - [v == LABELS[r]]), 0 on ignored rows
    (their loss is the constant 0). Grid: (rows,)."""
    row = tl.program_id(0).to(tl.int64)
    base = LOGITS + row * stride_row
    offs = tl.arange(0, BLOCK)
    label = tl.load(LABELS + row)
    g = tl.where(label == ignore_index, 0.0, tl.load(GRAD + row).to(tl.float32))
    lse = tl.load(LSE + row)
    for v0 in range(0, V, BLOCK):
        ok = v0 + offs < V
        x = tl.load(base + v0 + offs, mask=ok, other=0.0).to(tl.float32)
        d = g * tl.exp(x - lse) - tl.where(v0 + offs == label, g, 0.0)
        tl.store(base + v0 + offs, d.to(LOGITS.dtype.element_ty), mask=ok)


def _block(vocab: int) -> int:
    return min(_MAX_BLOCK, triton.next_power_of_2(vocab))


def chunk_stats(logits: Tensor, labels: Tensor, ignore_index: int, lse: Tensor, loss: Tensor) -> None:
    """logits (C, V) with unit stride along V, labels (C,) int64 -> writes lse and loss (C,) float32."""
    C, V = logits.shape
    ce_stats_kernel[(C,)](
        LOGITS=logits, LABELS=labels, LSE=lse, LOSS=loss, stride_row=logits.stride(0), V=V,
        ignore_index=ignore_index, BLOCK=_block(V), num_warps=8,
    )


def chunk_grad(logits: Tensor, labels: Tensor, ignore_index: int, lse: Tensor, grad: Tensor) -> None:
    """Turns logits (C, V) in place into dloss/dlogits for per-row loss gradients grad (C,) float32."""
    C, V = logits.shape
    ce_grad_kernel[(C,)](
        LOGITS=logits, LABELS=labels, LSE=lse, GRAD=grad, stride_row=logits.stride(0), V=V,
        ignore_index=ignore_index, BLOCK=_block(V), num_warps=8,
    )
