"""Forgetting attention against a paged decoding cache: ``forgetting_attention_with_paged_kvcache``.

The paged layout (model/paged.py builds it): a pool of blocks of ``DECODE_BLOCK`` keys, each owned by one
(sequence, KV head); a block table maps each (sequence, KV head)'s logical block j (keys 64j .. 64j + 63) to
a pool block, and a start pointer says which logical blocks are still resident: blocks before it were
evicted (their table entries may point anywhere) and are never read.

ACP is the decode op's (ops/kvcache.py), on the same 64-key block grid, with one difference: the threshold
uses L = max_seqlen, the cache's fixed maximum length, instead of the current length. With a static U that
makes delta = -2U - log(L_max) + log(eps) constant for the cache's life, and since c only falls as decoding
goes on, a block pruned for the newest query of every head of a group stays pruned for every later query
(method.md section 6): the cache may free it, and this op then computes the same function as it did before.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .acp import DEFAULT_LOG_EPS
from .custom_ops import paged_decode_attention_op
from .kvcache import DECODE_BACKENDS, DECODE_BLOCK, cache_attention_torch
from .validate import CacheProblem, auto_backend, check_common, needs_grad, refuse_grad, value_checks_on

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def paged_threshold(
    qk_bound: float | Tensor, n_heads: int, max_seqlen: int, log_eps: float, device: torch.device
) -> Tensor:
    """delta = -2U - log(max_seqlen) + log_eps per query head, in float64 rounded to float32: (Hq,) float32.

    The one formula the op and the cache's eviction share, so both prune exactly the same blocks. qk_bound:
    a float or an (Hq,) tensor (a static bound: from the QK-norm gains). Computed on ``device`` (no copy
    from the host, so it captures in a CUDA graph).
    """
    if isinstance(qk_bound, Tensor):
        u = qk_bound.detach().to(device=device, dtype=torch.float64).expand(n_heads)
    else:
        u = torch.full((n_heads,), float(qk_bound), dtype=torch.float64, device=device)
    return (-2.0 * u + (log_eps - math.log(max_seqlen))).float()


def check_paged_inputs(
    q: Tensor,
    k_pool: Tensor,
    v_pool: Tensor,
    c_pool: Tensor,
    block_table: Tensor,
    block_start: Tensor,
    cache_seqlens: Tensor,
    qk_bound: float | Tensor,
    sm_scale: float | None,
    log_eps: float | None,
    backend: str,
    max_seqlen: int | None = None,
) -> CacheProblem:
    """Validate the arguments of ``forgetting_attention_with_paged_kvcache``; max_len of the result is the
    table's capacity in keys.

    Raises:
        TypeError: a non-tensor argument, a wrong dtype, a qk_bound that is neither a float nor a tensor.
        ValueError: wrong ranks or shapes, mismatched devices, a block size other than DECODE_BLOCK, a bad
            sm_scale or log_eps, a max_seqlen that is not an int >= Tq, an unknown backend; with value checks
            on, lengths outside [Tq, min(capacity, max_seqlen)], a start pointer past a query's own block, or a
            resident block mapped outside the pool.
    """
    named = {"q": (q, 4), "k_pool": (k_pool, 3), "v_pool": (v_pool, 3), "c_pool": (c_pool, 3)}
    named |= {"block_table": (block_table, 3), "block_start": (block_start, 2), "cache_seqlens": (cache_seqlens, 1)}
    for name, (t, nd) in named.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != nd:
            raise ValueError(f"{name} must have {nd} dims, got shape {tuple(t.shape)}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
    if backend not in DECODE_BACKENDS:
        raise ValueError(f"backend must be None or one of {DECODE_BACKENDS}, got {backend!r}")
    if q.dtype not in _FLOATS:
        raise TypeError(f"q must be a floating tensor (fp16, bf16, fp32, fp64), got {q.dtype}")
    for name, t in (("k_pool", k_pool), ("v_pool", v_pool)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but q has {q.dtype}")
    if c_pool.dtype != torch.float32:
        raise TypeError(f"c_pool must be float32, got {c_pool.dtype}")
    for name, t in (("block_table", block_table), ("block_start", block_start), ("cache_seqlens", cache_seqlens)):
        if t.dtype != torch.int32:
            raise TypeError(f"{name} must be int32, got {t.dtype}")

    B, Tq, Hq, D = q.shape
    P, block, _ = k_pool.shape
    Hkv, nblk = block_table.shape[1], block_table.shape[2]
    if block != DECODE_BLOCK:
        raise ValueError(f"k_pool blocks must hold DECODE_BLOCK = {DECODE_BLOCK} keys, got {block}")
    if tuple(k_pool.shape) != (P, block, D) or v_pool.shape != k_pool.shape:
        raise ValueError(f"k_pool and v_pool must have shape (P, {block}, D={D}), got {tuple(k_pool.shape)}, "
                         f"{tuple(v_pool.shape)}")  # fmt: skip
    if Hkv == 0 or Hq % Hkv or tuple(c_pool.shape) != (P, block, Hq // Hkv):
        raise ValueError(f"c_pool must have shape (P, {block}, Hq / Hkv) with Hkv = block_table.shape[1] = {Hkv}, "
                         f"got {tuple(c_pool.shape)}")  # fmt: skip
    if block_table.shape[0] != B or tuple(block_start.shape) != (B, Hkv) or tuple(cache_seqlens.shape) != (B,):
        raise ValueError(f"block_table (B, Hkv, blocks), block_start (B, Hkv) and cache_seqlens (B,) must match "
                         f"B = {B}: got {tuple(block_table.shape)}, {tuple(block_start.shape)}, "
                         f"{tuple(cache_seqlens.shape)}")  # fmt: skip
    if min(B, Tq, Hq, D, P, nblk) == 0:
        raise ValueError(f"empty input: q {tuple(q.shape)}, k_pool {tuple(k_pool.shape)}, "
                         f"block_table {tuple(block_table.shape)}")  # fmt: skip
    if k_pool.stride(-1) != 1 or v_pool.stride(-1) != 1 or not c_pool.is_contiguous():
        raise ValueError("k_pool and v_pool need contiguous rows and c_pool must be contiguous")
    if block_table.stride(-1) != 1:
        raise ValueError("block_table must be contiguous along its last dim")
    if isinstance(qk_bound, Tensor):
        if tuple(qk_bound.shape) not in ((), (1,), (Hq,)):
            raise ValueError(f"qk_bound must be a float or a tensor of shape (), (1,) or (Hq,) = ({Hq},), got "
                             f"{tuple(qk_bound.shape)}")  # fmt: skip
        if value_checks_on() and not bool(((qk_bound >= 0) & torch.isfinite(qk_bound)).all()):
            raise ValueError("qk_bound must be finite and >= 0")
    elif isinstance(qk_bound, bool) or not isinstance(qk_bound, (int, float)):
        raise TypeError(f"qk_bound must be a non-negative float or a tensor (a static bound), got {qk_bound!r}")
    elif not (math.isfinite(qk_bound) and qk_bound >= 0):
        raise ValueError(f"qk_bound must be finite and >= 0, got {qk_bound!r}")
    sm_scale = check_common(q, Hq, Hkv, sm_scale, log_eps, backend, float64_backend="torch")
    capacity = nblk * block
    if max_seqlen is None:
        max_seqlen = capacity
    # The threshold's L_max must bound every sequence's length: each pruned weight is below eps / L_max, and a
    # row sums at most L of them (ops/acp.py); a smaller L_max voids the eps guarantee.
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int) or max_seqlen < Tq:
        raise ValueError(f"max_seqlen must be an int >= Tq = {Tq} (the longest a sequence may grow), got "
                         f"{max_seqlen!r}")  # fmt: skip
    if value_checks_on():
        _check_values(block_table, block_start, cache_seqlens, Tq, P, min(capacity, max_seqlen))
    return CacheProblem(B, Tq, capacity, Hq, Hkv, D, float(sm_scale))


def _check_values(table: Tensor, start: Tensor, lens: Tensor, q_len: int, pool: int, longest: int) -> None:
    """The checks that read values back to the host (one synchronisation for all of them)."""
    nblk = table.shape[2]
    lens64 = lens.long()
    first_query_block = ((lens64 - q_len).clamp(min=0) // DECODE_BLOCK)[:, None]  # (B, 1)
    late = (start.long() > first_query_block) | (start < 0)
    blocks = torch.arange(nblk, device=table.device)
    used = (blocks >= start[:, :, None]) & (blocks * DECODE_BLOCK < lens64[:, None, None])
    outside = used & ((table < 0) | (table >= pool))
    lo, hi, late, outside = torch.stack([lens64.min(), lens64.max(), late.any(), outside.any()]).tolist()
    if lo < q_len or hi > longest:
        raise ValueError(f"cache_seqlens must lie in [Tq, min(blocks * {DECODE_BLOCK}, max_seqlen)] = [{q_len}, "
                         f"{longest}], got values in [{lo}, {hi}]")  # fmt: skip
    if late:
        raise ValueError("block_start must be >= 0 and must not pass the block of any query (those keys are needed)")
    if outside:
        raise ValueError(f"block_table maps a resident block outside the pool [0, {pool})")


def gather_dense(
    k_pool: Tensor, v_pool: Tensor, c_pool: Tensor, block_table: Tensor, block_start: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The paged cache laid out densely: k, v (B, T, Hkv, D), c (B, T, Hq), resident (B, T, Hq) bool.

    T = blocks * DECODE_BLOCK. Evicted blocks come out as k = v = 0 and c = 0 with resident False (their
    table entries may point at any block, or outside the pool).
    """
    B, Hkv, nblk = block_table.shape
    P, block, D = k_pool.shape
    group = c_pool.shape[2]
    resident = torch.arange(nblk, device=block_table.device) >= block_start[:, :, None].long()  # (B, Hkv, nblk)
    idx = torch.where(resident, block_table.long(), 0).clamp(0, P - 1)

    def dense(pool: Tensor) -> Tensor:  # (B, Hkv, nblk, block, X) -> (B, nblk * block, Hkv, X)
        x = torch.where(resident[..., None, None], pool[idx], 0)
        return x.permute(0, 2, 3, 1, 4).reshape(B, nblk * block, Hkv, x.shape[-1])

    k, v = dense(k_pool), dense(v_pool)
    c = dense(c_pool).reshape(B, nblk * block, Hkv * group)
    res = resident.repeat_interleave(block, dim=2).transpose(1, 2).repeat_interleave(group, dim=2)
    return k, v, c, res


def forgetting_attention_with_paged_kvcache(
    q: Tensor,
    k_pool: Tensor,
    v_pool: Tensor,
    c_pool: Tensor,
    block_table: Tensor,
    block_start: Tensor,
    cache_seqlens: Tensor,
    *,
    qk_bound: float | Tensor,
    max_seqlen: int | None = None,
    sm_scale: float | None = None,
    log_eps: float | None = DEFAULT_LOG_EPS,
    backend: str | None = None,
) -> Tensor:
    """Forgetting attention of new queries against a paged KV cache, with ACP on fixed 64-key blocks.

    The function of ``forgetting_attention_with_kvcache`` on the dense cache the table describes, except
    that (i) keys of logical blocks before ``block_start`` are not there (evicted: they must have been pruned
    for every later query, which the cache's eviction guarantees), and (ii) delta = -2U - log(max_seqlen) +
    log_eps (``paged_threshold``), fixed for the cache's life. Each output row moves by at most
    2 * eps * max_j |v_j| from exact attention.

    Args:
        q: (B, Tq, Hq, D) the new queries (query i of sequence b sits at cache_seqlens[b] - Tq + i).
        k_pool, v_pool: (P, DECODE_BLOCK, D) in q's dtype: key and value blocks, one KV head each.
        c_pool: (P, DECODE_BLOCK, Hq / Hkv) float32, contiguous: the cumulative log gate of each key, for each
            query head of the block's group, non-increasing along a sequence (any per-(sequence, head)
            constant may have been subtracted).
        block_table: (B, Hkv, blocks) int32: pool index of each (sequence, KV head)'s logical block.
        block_start: (B, Hkv) int32: the first resident logical block (at most the block of the first query).
        cache_seqlens: (B,) int32 cached keys per sequence, new ones included; Tq <= it <= blocks * 64.
        qk_bound: the static U >= |sm_scale q.k|: a float or an (Hq,) tensor (required: eviction is only safe
            with a bound that new keys cannot raise).
        max_seqlen: L_max of the threshold (default blocks * 64, the table's capacity): the longest any sequence
            may grow in the cache's life, >= Tq (value checks refuse a longer cache_seqlens: the eps bound needs
            every length <= max_seqlen).
        sm_scale: default 1 / sqrt(D). log_eps: log of the ACP tolerance; None keeps every resident key.
        backend: None (auto: Triton on CUDA and under TRITON_INTERPRET=1, PyTorch otherwise and whenever
            autograd needs a gradient), "triton" (no backward) or "torch".
    Returns:
        (B, Tq, Hq, D) in q's dtype.
    Raises:
        TypeError, ValueError: on bad input, naming the argument (see ``check_paged_inputs``).

    With value checks off, nothing is read back to the host: a decode step captures in a CUDA graph.
    """
    if backend is None and isinstance(q, Tensor):
        backend = "torch" if needs_grad(q, k_pool, v_pool, c_pool) else auto_backend(q)
    refuse_grad(backend, q, k_pool, v_pool, c_pool)
    args = (q, k_pool, v_pool, c_pool, block_table, block_start, cache_seqlens)
    problem = check_paged_inputs(*args, qk_bound, sm_scale, log_eps, backend, max_seqlen)
    max_seqlen = problem.max_len if max_seqlen is None else max_seqlen
    delta = None
    if log_eps is not None:
        delta = paged_threshold(qk_bound, problem.n_heads, max_seqlen, log_eps, q.device)
    if backend == "triton":
        return paged_decode_attention_op(*args, delta, problem.max_len, problem.kv_heads, problem.sm_scale)
    k, v, c, resident = gather_dense(k_pool, v_pool, c_pool, block_table, block_start)
    B = q.shape[0]
    delta_b = None if delta is None else delta.expand(B, -1)
    return cache_attention_torch(q, k, v, c, cache_seqlens, delta_b, problem, resident)
