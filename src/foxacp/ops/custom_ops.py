"""The kernels as torch.library custom ops, so that torch.compile treats each launch as one opaque call.

Without this, Dynamo traces into the Python launchers (shape arithmetic, cached constant tensors, the Triton
runtime) and breaks the graph around them; as an opaque op a compiled decode step is one graph whose small
ops Inductor fuses around the attention kernel (experiment 049).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .validate import CacheProblem


@torch.library.custom_op("foxacp::decode_attention", mutates_args=())
def decode_attention_op(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    c_cache: Tensor,
    cache_seqlens: Tensor,
    u: Tensor | None,
    log_eps: float,
    sm_scale: float,
    block_n: int,
) -> Tensor:
    """``triton_decode.decode_attention`` on validated inputs; u None is exact attention. (B, Tq, Hq, D)."""
    from .triton_decode import decode_attention  # imported lazily: Triton compiles on first use

    B, Tq, Hq, D = q.shape
    problem = CacheProblem(B, Tq, k_cache.shape[1], Hq, k_cache.shape[2], D, sm_scale)
    acp = None if u is None else (u, log_eps)
    return decode_attention(q, k_cache, v_cache, c_cache, cache_seqlens, acp, problem, block_n)


@decode_attention_op.register_fake
def _decode_attention_fake(q, k_cache, v_cache, c_cache, cache_seqlens, u, log_eps, sm_scale, block_n):
    return q.new_empty(q.shape)


@torch.library.custom_op("foxacp::paged_decode_attention", mutates_args=())
def paged_decode_attention_op(
    q: Tensor,
    k_pool: Tensor,
    v_pool: Tensor,
    c_pool: Tensor,
    block_table: Tensor,
    block_start: Tensor,
    cache_seqlens: Tensor,
    delta: Tensor | None,
    max_len: int,
    kv_heads: int,
    sm_scale: float,
) -> Tensor:
    """``triton_paged.paged_decode_attention`` on validated inputs; delta None keeps every resident key."""
    from .triton_paged import paged_decode_attention  # imported lazily: Triton compiles on first use

    B, Tq, Hq, D = q.shape
    problem = CacheProblem(B, Tq, max_len, Hq, kv_heads, D, sm_scale)
    return paged_decode_attention(q, k_pool, v_pool, c_pool, block_table, block_start, cache_seqlens, delta, problem)


@paged_decode_attention_op.register_fake
def _paged_decode_attention_fake(q, *args):
    return q.new_empty(q.shape)
