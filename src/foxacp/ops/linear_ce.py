"""The LM head and its cross-entropy in chunks of rows, never holding the full (N, V) logits.

    loss = linear_cross_entropy(hidden, weight, labels)      # == F.cross_entropy(hidden @ weight.T, labels,
                                                             #        reduction="none"), 0 at ignore_index

At a 50k vocabulary and 32k tokens per micro-batch the usual path writes 3.3 GB of bf16 logits, a 6.6 GB float32
copy, and the softmax's float32 gradient: ~20 ms of a 180 ms step on an H200 for work the matmuls do in ~10
(experiments/046-train-step-profile). Here each chunk's logits are computed in the compute dtype, reduced to a
float32 log-sum-exp per row and dropped; the backward computes them again (one more matmul) and turns them in
place into the logits' gradient, from which the chunk's dhidden and its share of dweight follow. Only (N,) float32
rows of statistics are kept between forward and backward. The per-row work runs as Triton kernels
(triton_ce.py) on CUDA and in the interpreter, and as PyTorch ops elsewhere; ``linear_cross_entropy_reference``
is the slow twin the tests compare against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import interpreting
from .validate import first_order_only

# Logit entries per chunk: 2^28 (512 MB in bf16; ~5.3k rows at a 50k vocabulary) keeps every matmul thousands of
# rows tall, so the chunking costs nothing in matmul speed, and bounds the extra memory at any batch size.
CHUNK_ELEMENTS = 1 << 28


def linear_cross_entropy_reference(hidden: Tensor, weight: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """The slow twin: full logits hidden @ weight.T in the inputs' dtype (under autocast: the autocast dtype),
    then F.cross_entropy over them in float32 (float64 for float64 inputs). Shapes as ``linear_cross_entropy``."""
    logits = F.linear(hidden, weight)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    loss = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=ignore_index, reduction="none")
    return loss.view(labels.shape)


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    chunk_rows: int | None = None,
) -> Tensor:
    """Per-row cross-entropy of the logits hidden @ weight.T against labels, without materialising the logits.

    hidden (..., d) float, weight (V, d) float, labels (...) int64 -> loss (...) float32 (float64 for float64
    inputs), 0 where the label is ``ignore_index``. Differentiable in hidden and weight; their gradients come back
    in their own dtypes (weight's accumulated over the chunks in float32). The logits are computed in the
    autocast dtype when autocast is on for hidden's device, else in the promoted dtype of hidden and weight; the
    log-sum-exp is float32 (float64 for float64). ``chunk_rows``: rows per chunk (default: ~2^28 logits).
    A label outside [0, V) that is not ignore_index gives a NaN loss on the Triton path (no host sync to check it)
    and raises on the PyTorch path.

    Raises:
        TypeError: hidden or weight not floating point, labels not int64.
        ValueError: shapes that do not match, or a chunk_rows that is not a positive integer.
    """
    if not hidden.is_floating_point() or not weight.is_floating_point():
        raise TypeError(f"hidden and weight must be floating point, got {hidden.dtype} and {weight.dtype}")
    if labels.dtype != torch.int64:
        raise TypeError(f"labels must be int64, got {labels.dtype}")
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"weight must be (V, {hidden.shape[-1]}) for hidden {tuple(hidden.shape)}, got {tuple(weight.shape)}"
        )
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match hidden {tuple(hidden.shape)} without d")
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ValueError(f"chunk_rows must be a positive integer or None, got {chunk_rows!r}")
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
    else:
        dtype = torch.promote_types(hidden.dtype, weight.dtype)
    rows = chunk_rows or max(1, CHUNK_ELEMENTS // weight.shape[0])
    with torch.autocast(device_type, enabled=False):
        loss = _LinearCrossEntropy.apply(
            hidden.reshape(-1, hidden.shape[-1]), weight, labels.reshape(-1).contiguous(), dtype, ignore_index, rows
        )
    return loss.view(labels.shape)


def _use_triton(logits: Tensor) -> bool:
    """Triton on CUDA for 16- and 32-bit logits (its statistics are float32, so float64 stays in PyTorch), and in
    the CPU interpreter for the dtypes it takes (numpy has no bfloat16)."""
    if logits.device.type == "cuda":
        return logits.dtype in (torch.float16, torch.bfloat16, torch.float32)
    return interpreting() and logits.dtype in (torch.float16, torch.float32)


def chunk_stats(logits: Tensor, labels: Tensor, ignore_index: int, lse: Tensor, loss: Tensor) -> None:
    """logits (C, V), labels (C,) -> writes the rows' log-sum-exp and loss (C,) (0 at ignore_index)."""
    if _use_triton(logits):
        from .triton_ce import chunk_stats as triton_stats

        return triton_stats(logits, labels, ignore_index, lse, loss)
    x = logits.to(lse.dtype)
    lse.copy_(torch.logsumexp(x, -1))
    keep = labels != ignore_index
    target = x.gather(1, torch.where(keep, labels, 0)[:, None])[:, 0]
    loss.copy_(torch.where(keep, lse - target, 0.0))


def chunk_grad(logits: Tensor, labels: Tensor, ignore_index: int, lse: Tensor, grad: Tensor) -> None:
    """Turns logits (C, V) in place into grad[r] * (softmax - onehot(labels[r])), 0 on ignored rows."""
    if _use_triton(logits):
        from .triton_ce import chunk_grad as triton_grad

        return triton_grad(logits, labels, ignore_index, lse, grad)
    keep = labels != ignore_index
    g = torch.where(keep, grad.to(lse.dtype), 0.0)
    d = torch.exp(logits.to(lse.dtype) - lse[:, None]) * g[:, None]
    d.scatter_add_(1, torch.where(keep, labels, 0)[:, None], -g[:, None])
    logits.copy_(d)


class _LinearCrossEntropy(torch.autograd.Function):
    """hidden (N, d), weight (V, d), labels (N,) -> loss (N,); see ``linear_cross_entropy``."""

    @staticmethod
    def forward(
        ctx, hidden: Tensor, weight: Tensor, labels: Tensor, dtype: torch.dtype, ignore_index: int, rows: int
    ) -> Tensor:
        stat_dtype = torch.promote_types(dtype, torch.float32)
        N = hidden.shape[0]
        w = weight.to(dtype)
        lse = torch.empty(N, dtype=stat_dtype, device=hidden.device)
        loss = torch.empty(N, dtype=stat_dtype, device=hidden.device)
        for lo in range(0, N, rows):
            hi = min(N, lo + rows)
            logits = hidden[lo:hi].to(dtype) @ w.T
            chunk_stats(logits, labels[lo:hi], ignore_index, lse[lo:hi], loss[lo:hi])
        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.dtype, ctx.ignore_index, ctx.rows = dtype, ignore_index, rows
        return loss

    @staticmethod
    @first_order_only  # its kernels record no graph: a double backward raises instead of dropping terms
    def backward(ctx, grad_loss: Tensor):
        hidden, weight, labels, lse = ctx.saved_tensors
        want_h, want_w = ctx.needs_input_grad[:2]
        N, rows = hidden.shape[0], ctx.rows
        w = weight.to(ctx.dtype)
        grad_loss = grad_loss.to(lse.dtype).contiguous()
        dh = torch.empty_like(hidden) if want_h else None
        # float32 accumulation over the chunks; each chunk's product is rounded once to the compute dtype, as
        # the full-logits path rounds its one product. Except in fp16: there a chunk's partial product can pass
        # 65504 where the whole sum does not (a loss-scaled step), so it is formed in float32.
        wide = ctx.dtype == torch.float16
        dw = torch.zeros(weight.shape, dtype=torch.promote_types(weight.dtype, torch.float32), device=weight.device)
        for lo in range(0, N, rows):
            hi = min(N, lo + rows)
            h = hidden[lo:hi].to(ctx.dtype)
            dlogits = h @ w.T
            chunk_grad(dlogits, labels[lo:hi], ctx.ignore_index, lse[lo:hi], grad_loss[lo:hi])
            if want_h:
                dh[lo:hi] = dlogits @ w
            if want_w:
                dw += dlogits.T.float() @ h.float() if wide else dlogits.T @ h
        return dh, dw.to(weight.dtype) if want_w else None, None, None, None, None
