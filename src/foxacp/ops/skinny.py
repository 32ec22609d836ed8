"""``skinny_linear``: x W^T for the few rows of a decode step, on the Triton GEMM of ``triton_skinny``.

A decode step's GEMMs have one row per sequence (or a short chunk); cuBLAS reads their weights well below HBM
bandwidth there (experiment 049), and the step is bound by those reads. Every other call (more rows, float32,
a tensor that wants a gradient, the CPU) is ``F.linear``, the twin the tests compare the kernel with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import interpreting
from .custom_ops import skinny_partials_op

SKINNY_DTYPES = (torch.float16, torch.bfloat16)
MAX_ROWS = 16  # rows the kernel takes (its M block); set here so that importing foxacp imports no Triton


def takes_skinny(x: Tensor, weight: Tensor) -> bool:
    """Whether ``skinny_linear`` runs the Triton kernel for this call: at most MAX_ROWS rows of fp16/bf16 on a
    GPU (fp16 only under the interpreter, whose bf16 dots are wrong), both with a unit stride along K, and no
    gradient wanted."""
    rows = x.numel() // max(x.shape[-1], 1)
    return (
        0 < rows <= MAX_ROWS
        and (x.dtype == torch.float16 if interpreting() else x.is_cuda)
        and x.dtype in SKINNY_DTYPES
        and weight.dtype == x.dtype
        and weight.dim() == 2
        and weight.shape[0] > 0
        and weight.shape[1] == x.shape[-1]  # else F.linear raises its error
        and weight.stride(-1) == 1
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    )


def skinny_linear(x: Tensor, weight: Tensor) -> Tensor:
    """x (..., K), weight (N, K) -> x @ weight.T (..., N), like ``F.linear`` without bias.

    Runs the Triton GEMM for few rows (``takes_skinny``), else ``F.linear``. The kernel's float32 partials over
    the splits of K are summed here, in PyTorch: under torch.compile the sum and the rounding to x's dtype fuse
    into whatever consumes the product, instead of a summing kernel per GEMM.
    """
    if not takes_skinny(x, weight):
        return F.linear(x, weight)
    rows = x.reshape(-1, x.shape[-1])
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    part = skinny_partials_op(rows, weight)
    y = part[0] if part.shape[0] == 1 else part.sum(0)
    return y.to(x.dtype).view(*x.shape[:-1], weight.shape[0])
