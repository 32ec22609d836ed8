"""A Triton GEMM for a few rows: y = x W^T with x (M <= 16, K) and a row-major weight W (N, K).

A decode step multiplies one token per sequence by every weight of the model once, so it is bound by reading the
weights. cuBLAS picks small tiles for M = 1 and reads them at about 40% of HBM bandwidth on an H200 (experiment
049: 0.8 ms of GEMMs where streaming the 760M model's weights takes 0.36). Here each program streams a
(BLOCK_N, BLOCK_K) slab of W per step along its contiguous K axis and multiplies it by all M rows at once; K is
split among programs when N alone gives too few of them to fill the GPU. The kernel returns the splits' float32
partials; their sum is left to the caller, so that under torch.compile it fuses into the kernel that consumes the
product (a residual add, a norm, the SwiGLU) instead of costing a launch of its own per GEMM. The grid depends only
on the shapes (a decode step captures in a CUDA graph).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .config import pdl_args
from .skinny import MAX_ROWS
from .triton_decode import _sms

BLOCK_M = MAX_ROWS  # rows padded to one tile (16: the smallest a tensor-core dot takes)
BLOCK_N, BLOCK_K = 64, 128
NUM_WARPS, NUM_STAGES = 4, 4
PROGRAMS_PER_SM = 2  # split K until the grid has this many programs per multiprocessor
MIN_K_TILES_PER_SPLIT = 3  # a split's K range, at least (shorter ones cost more partials than they save)


# fmt: off
@triton.jit
def _skinny_kernel(X, W, Part, M, N, K, stride_xm, stride_wn, TILES_PER_SPLIT,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr):
    if PDL:  # launched early (programmatic dependent launch): x comes from the kernel before, wait for it
        tl.extra.cuda.gdc_wait()
    pid_n, split = tl.program_id(0), tl.program_id(1)
    rows = tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    w_rows = cols.to(tl.int64) * stride_wn  # a vocabulary-sized weight passes 2**31 elements
    x_rows = rows.to(tl.int64) * stride_xm  # rows of x may lie far apart (the last position of each sequence)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_lo = split * TILES_PER_SPLIT * BLOCK_K
    k_hi = tl.minimum(k_lo + TILES_PER_SPLIT * BLOCK_K, K)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        k = k0 + ks
        x = tl.load(X + x_rows[:, None] + k[None, :], mask=(rows[:, None] < M) & (k[None, :] < k_hi), other=0.0)
        w = tl.load(W + w_rows[:, None] + k[None, :], mask=(cols[:, None] < N) & (k[None, :] < k_hi), other=0.0)
        acc += tl.dot(x, tl.trans(w))
    if PDL:  # every load is used: the next kernel may start its launch (it waits for this one's stores)
        tl.extra.cuda.gdc_launch_dependents()
    keep = (rows[:, None] < M) & (cols[None, :] < N)
    tl.store(Part + (split * M + rows[:, None]).to(tl.int64) * N + cols[None, :], acc, mask=keep)
# fmt: on


def split_k(n: int, k: int, device: torch.device) -> int:
    """Splits of K (the partials ``skinny_partials`` returns): enough programs for ``PROGRAMS_PER_SM`` per
    multiprocessor, each split at least ``MIN_K_TILES_PER_SPLIT`` tiles of K and none empty. From the shapes
    alone (the custom op's fake gives the same number)."""
    tiles_n, tiles_k = triton.cdiv(n, BLOCK_N), triton.cdiv(k, BLOCK_K)
    most = max(1, tiles_k // MIN_K_TILES_PER_SPLIT)
    splits = max(1, min(triton.cdiv(PROGRAMS_PER_SM * _sms(device), tiles_n), most))
    return triton.cdiv(tiles_k, triton.cdiv(tiles_k, splits))  # the same tiles per split, and no empty split


def skinny_partials(x: Tensor, weight: Tensor) -> Tensor:
    """x (M, K) with M <= MAX_ROWS and unit stride along K, weight (N, K) likewise -> the float32 partial
    products of the ``split_k(N, K)`` splits of K, (splits, M, N); their sum is x @ weight.T."""
    M, K = x.shape
    N = weight.shape[0]
    splits = split_k(N, K, x.device)
    per_split = triton.cdiv(triton.cdiv(K, BLOCK_K), splits)
    part = torch.empty(splits, M, N, device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(N, BLOCK_N), splits)
    _skinny_kernel[grid](
        x, weight, part, M, N, K, x.stride(0), weight.stride(0), per_split,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        **pdl_args(x.device),
    )  # fmt: skip
    return part
