"""Forgetting attention against a decoding cache: ``forgetting_attention_with_kvcache``.

New queries (one token, or a short chunk of speculated or prefilled tokens) attend to the keys a cache
already holds, their own included. ACP prunes whole blocks of ``DECODE_BLOCK`` keys: block j is skipped for
the query at position p of head h when c[p] - c[last key of block j] < delta[h] (the block's largest decay
is below the threshold, so every weight in it is below eps / L; the proof is in ops/acp.py). L is the sequence's
number of cached keys. Because c is non-increasing, each row keeps a suffix of its blocks; the block holding
the row's own key is always kept (its decay there is 0 >= delta).

The block grid is fixed (the same on every device and backend), so the Triton kernel and the PyTorch twin
compute the same function, pruned entries included.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .acp import DEFAULT_LOG_EPS, AcpStats, qk_bound_from_arg, threshold
from .custom_ops import decode_attention_op
from .validate import (
    CacheProblem,
    auto_backend,
    check_common,
    check_kv_shapes,
    needs_grad,
    refuse_grad,
    value_checks_on,
)

DECODE_BLOCK = 64  # keys per ACP block of the decode op; the Triton kernel's key block is the same
DECODE_BACKENDS = ("triton", "torch")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_cache_inputs(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    c_cache: Tensor,
    cache_seqlens: Tensor,
    sm_scale: float | None,
    log_eps: float | None,
    backend: str,
) -> CacheProblem:
    """Validate the arguments of ``forgetting_attention_with_kvcache`` and describe the call.

    Raises:
        TypeError: a non-tensor argument, a wrong dtype.
        ValueError: mismatched shapes or devices, Tq > Tmax, Hq not a multiple of Hkv, an empty input, a head
            dim or dtype the backend does not support, a bad sm_scale or log_eps, an unknown backend; and,
            while value checks are on, cache_seqlens outside [Tq, Tmax] or c_cache not finite and
            non-increasing over each sequence's cached keys.
    """
    dims = {"q": (q, 4), "k_cache": (k_cache, 4), "v_cache": (v_cache, 4), "c_cache": (c_cache, 3)}
    dims["cache_seqlens"] = (cache_seqlens, 1)
    for name, (t, _) in dims.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if backend not in DECODE_BACKENDS:
        raise ValueError(f"backend must be None or one of {DECODE_BACKENDS}, got {backend!r}")
    for name, (t, nd) in dims.items():
        if t.dim() != nd:
            raise ValueError(f"{name} must have {nd} dims, got shape {tuple(t.shape)}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
    if q.dtype not in _FLOATS:
        raise TypeError(f"q must be a floating tensor (fp16, bf16, fp32, fp64), got {q.dtype}")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but q has {q.dtype}")
    if c_cache.dtype != torch.float32:
        raise TypeError(f"c_cache must be float32, got {c_cache.dtype}")
    if cache_seqlens.dtype != torch.int32:
        raise TypeError(f"cache_seqlens must be int32, got {cache_seqlens.dtype}")

    B, Tq, Hq, D = q.shape
    _, Tmax, Hkv, _ = k_cache.shape
    check_kv_shapes(q, k_cache, v_cache, "k_cache", "v_cache")
    if tuple(c_cache.shape) != (B, Tmax, Hq):
        raise ValueError(f"c_cache must have shape (B, Tmax, Hq) = {(B, Tmax, Hq)}, got {tuple(c_cache.shape)}")
    if tuple(cache_seqlens.shape) != (B,):
        raise ValueError(f"cache_seqlens must have shape (B,) = ({B},), got {tuple(cache_seqlens.shape)}")
    if min(B, Tq, Hq, Hkv, D, Tmax) == 0:
        raise ValueError(f"empty input: q {tuple(q.shape)}, k_cache {tuple(k_cache.shape)}")
    if Tq > Tmax:
        raise ValueError(f"q has {Tq} queries but the cache holds at most {Tmax} keys (Tq must be <= Tmax)")
    sm_scale = check_common(q, Hq, Hkv, sm_scale, log_eps, backend, float64_backend="torch")
    if value_checks_on():
        _check_values(c_cache, cache_seqlens, Tq)
    return CacheProblem(B, Tq, Tmax, Hq, Hkv, D, float(sm_scale))


def _check_values(c_cache: Tensor, cache_seqlens: Tensor, q_len: int) -> None:
    """The checks that read values back to the host (one synchronisation for all of them)."""
    lens = cache_seqlens.long()
    Tmax = c_cache.shape[1]
    valid = torch.arange(Tmax, device=c_cache.device)[None, :] < lens.clamp(0, Tmax)[:, None]  # (B, Tmax)
    c = c_cache.detach()
    finite = (torch.isfinite(c) | ~valid[:, :, None]).all()
    rising = ((c[:, 1:] > c[:, :-1]) & valid[:, 1:, None]).any()
    lo, hi = lens.min(), lens.max()
    lo, hi, finite, rising = torch.stack([lo, hi, finite.long(), rising.long()]).tolist()
    if lo < q_len or hi > Tmax:
        raise ValueError(f"cache_seqlens must lie in [Tq, Tmax] = [{q_len}, {Tmax}], got values in [{lo}, {hi}]")
    if not finite:
        raise ValueError("c_cache must be finite at every cached position (found NaN or inf)")
    if rising:
        raise ValueError("c_cache must be non-increasing along positions (a cumulative sum of log gates <= 0)")


def query_positions(cache_seqlens: Tensor, q_len: int) -> Tensor:
    """(B, Tq) int64: the key position of each query (query i of sequence b sits at L_b - Tq + i)."""
    return cache_seqlens.long()[:, None] - q_len + torch.arange(q_len, device=cache_seqlens.device)[None, :]


def logit_bound(q: Tensor, k_cache: Tensor, cache_seqlens: Tensor, problem: CacheProblem, qk_bound) -> Tensor:
    """U per (sequence, query head): (B, Hq) float64, possibly a broadcast view.

    A float or tensor ``qk_bound`` is taken as given (a float costs no launch); None gives
    sm_scale * max_i ||q_i|| * max_j ||k_j|| over the new queries and the cached keys.
    """
    if qk_bound is not None:
        return qk_bound_from_arg(qk_bound, problem, q.device)
    with torch.no_grad():
        q_max = torch.linalg.vector_norm(q.float(), dim=-1).amax(1)  # (B, Hq)
        k_norm = torch.linalg.vector_norm(k_cache.float(), dim=-1)  # (B, Tmax, Hkv)
        cached = torch.arange(k_cache.shape[1], device=q.device)[None, :] < cache_seqlens[:, None]
        k_max = torch.where(cached[:, :, None], k_norm, 0.0).amax(1).repeat_interleave(problem.group, dim=1)
        # A NaN q or k gives no bound: prune nothing there (as acp.qk_bound_from_data does), so that the rows before
        # a NaN key stay exact, as in the kernel, whose "pruned" comparison is false against a NaN threshold.
        return torch.nan_to_num(problem.sm_scale * q_max.double() * k_max.double(), nan=math.inf)


def cache_threshold(u: Tensor, cache_seqlens: Tensor, problem: CacheProblem, log_eps: float) -> Tensor:
    """delta = -2U - log(L) + log_eps per (sequence, query head), L = cache_seqlens: (B, Hq) float32.

    ``acp.threshold`` in float64, rounded to float32; the kernel evaluates the same float64 expression, and
    both compare float32 decays against the float32 result, so they prune the same blocks.
    """
    return threshold(u, problem.packed(cache_seqlens), log_eps).float()


def kept_blocks(c_cache: Tensor, cache_seqlens: Tensor, delta: Tensor, q_len: int) -> Tensor:
    """Which key blocks each query row keeps: (B, Tq, num_blocks, Hq) bool, before the causal mask.

    Block j is kept for the row at position p when c[p] - c[e_j] >= delta (float32), e_j being the block's
    last cached key, min((j + 1) * DECODE_BLOCK, L) - 1.
    """
    B, Tmax, Hq = c_cache.shape
    blocks = torch.arange(-(-Tmax // DECODE_BLOCK), device=c_cache.device)
    ends = torch.minimum((blocks[None, :] + 1) * DECODE_BLOCK, cache_seqlens.long()[:, None]) - 1  # (B, nb)
    c_end = c_cache.gather(1, ends[:, :, None].expand(-1, -1, Hq))  # (B, nb, Hq)
    c_q = c_cache.gather(1, query_positions(cache_seqlens, q_len)[:, :, None].expand(-1, -1, Hq))  # (B, Tq, Hq)
    return (c_q[:, :, None, :] - c_end[:, None, :, :]) >= delta[:, None, None, :]


def cache_attention_torch(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    c_cache: Tensor,
    cache_seqlens: Tensor,
    delta: Tensor | None,
    problem: CacheProblem,
    resident: Tensor | None = None,
) -> Tensor:
    """The PyTorch twin of the decode kernel: dense scores over the whole cache, masked.

    Computes in float32 (float64 for float64 inputs); the decay c_q - c_k is a float32 difference, as in the
    kernel (float64 for float64 inputs). Keys past each sequence's length are never used, nor keys where
    ``resident`` (B, Tmax, Hq) bool is False (evicted from a paged cache): their k, v and c may hold anything,
    NaN included, forward and backward. Returns (B, Tq, Hq, D) in q's dtype.
    """
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    B, Tq, Hq, _ = q.shape
    Tmax = k_cache.shape[1]
    pos = query_positions(cache_seqlens, Tq)
    keys = torch.arange(Tmax, device=q.device)
    # Slots past a sequence's length (and evicted ones) may hold anything, NaN included: they are zeroed, not only
    # masked out of the softmax, or a backward would form 0 * NaN through them.
    held = (keys[None, :] < cache_seqlens[:, None])[:, :, None]  # (B, Tmax, 1)
    held = held & resident if resident is not None else held.expand(-1, -1, Hq)  # (B, Tmax, Hq)
    keep = (keys[None, None, :] <= pos[:, :, None])[..., None] & held[:, None]  # (B, Tq, Tmax, Hq)
    if delta is not None:
        keep = keep & kept_blocks(c_cache, cache_seqlens, delta, Tq)[:, :, keys // DECODE_BLOCK, :]
    c = torch.where(held, c_cache.to(dt), 0.0)
    c_q = c.gather(1, pos[:, :, None].expand(-1, -1, Hq))
    decay = c_q[:, :, None, :] - c[:, None, :, :]  # (B, Tq, Tmax, Hq)
    k = torch.where(held[..., None], k_cache.to(dt).repeat_interleave(problem.group, dim=2), 0.0)
    v = torch.where(held[..., None], v_cache.to(dt).repeat_interleave(problem.group, dim=2), 0.0)
    s = torch.einsum("bihd,bjhd->bijh", q.to(dt), k) * problem.sm_scale + decay
    p = torch.softmax(s.masked_fill(~keep, -torch.inf), dim=2)
    return torch.einsum("bijh,bjhd->bihd", p, v).to(q.dtype)


def cache_stats(c_cache: Tensor, cache_seqlens: Tensor, delta: Tensor | None, q_len: int) -> AcpStats:
    """Kept and causal (query row, key block) pairs per query head, summed over sequences.

    In ``AcpStats`` terms a tile is one query row by ``DECODE_BLOCK`` keys.
    """
    B, Tmax, Hq = c_cache.shape
    blocks = torch.arange(-(-Tmax // DECODE_BLOCK), device=c_cache.device)
    causal = blocks[None, None, :] <= (query_positions(cache_seqlens, q_len) // DECODE_BLOCK)[:, :, None]
    causal = causal[..., None].expand(-1, -1, -1, Hq)  # (B, Tq, nb, Hq)
    kept = causal if delta is None else causal & kept_blocks(c_cache, cache_seqlens, delta, q_len)
    return AcpStats(kept.sum((0, 1, 2)), causal.sum((0, 1, 2)), 1, DECODE_BLOCK)


def forgetting_attention_with_kvcache(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    c_cache: Tensor,
    cache_seqlens: Tensor,
    *,
    sm_scale: float | None = None,
    log_eps: float | None = DEFAULT_LOG_EPS,
    qk_bound: float | Tensor | None = None,
    return_stats: bool = False,
    backend: str | None = None,
) -> Tensor | tuple[Tensor, AcpStats]:
    """Forgetting attention of new queries against a KV cache (decoding), skipping blocks ACP proves negligible.

    o_i = sum_j softmax_j(sm_scale * q_i . k_j + c[p_i] - c[j]) v_j over cached keys j <= p_i, where query i of
    sequence b sits at p_i = cache_seqlens[b] - Tq + i. With ``log_eps`` set, key blocks of ``DECODE_BLOCK``
    whose largest decay for the row is below delta = -2U - log(L) + log_eps (L = cache_seqlens[b]) are
    skipped, which moves each output row by at most 2 * eps * max_j |v_j|.

    Args:
        q: (B, Tq, Hq, D) the new queries; fp16/bf16 on GPU, fp16/fp32 through the interpreter, float64 with
            ``backend="torch"``.
        k_cache, v_cache: (B, Tmax, Hkv, D), q's dtype, already holding the new keys; Hq % Hkv == 0. Any
            strides (the kernel reads them in place).
        c_cache: (B, Tmax, Hq) float32 cumulative log forget gate at each cached position, non-increasing
            along positions; any per-(sequence, head) constant may have been subtracted. Being float32, a
            value of magnitude M is rounded by up to M * 2^-24 nats: keep c near 0 where the cache reads it
            (foxacp's cache rebases it; method.md section 6).
        cache_seqlens: (B,) int32 number of cached keys per sequence, Tq <= cache_seqlens[b] <= Tmax.
        sm_scale: softmax scale on q . k; default 1 / sqrt(D). The decay is never scaled.
        log_eps: natural log of the ACP tolerance; None computes exact attention.
        qk_bound: U >= |sm_scale * q . k|: a float, an (Hq,) tensor or broadcastable to (B, Hq) (a model
            with QK-norm passes its static bound). None derives it from q and the cached keys (a pass over
            the whole cache: decoding should pass a bound).
        return_stats: also return ``AcpStats`` over (query row, key block) pairs (tile_m = 1).
        backend: None (auto: Triton on CUDA, and on CPU under TRITON_INTERPRET=1 for fp16/fp32 and the
            Triton head dims; PyTorch otherwise and whenever autograd needs a gradient), "triton" (no
            backward: refused when a gradient is needed) or "torch".
    Returns:
        o: (B, Tq, Hq, D) in q's dtype, or (o, stats) when ``return_stats``.
    Raises:
        TypeError, ValueError: on bad input, naming the argument (see ``check_cache_inputs``).

    Without value checks (``set_value_checks(False)``) and with a float or tensor ``qk_bound``, a call
    reads nothing back to the host and its launch grid depends only on the shapes: it captures in a CUDA
    graph.
    """
    if backend is None and isinstance(q, Tensor):
        backend = "torch" if needs_grad(q, k_cache, v_cache, c_cache) else auto_backend(q)
    refuse_grad(backend, q, k_cache, v_cache, c_cache)
    problem = check_cache_inputs(q, k_cache, v_cache, c_cache, cache_seqlens, sm_scale, log_eps, backend)
    log_eps = None if log_eps is None else float(log_eps)  # a NumPy float passes the checks; the kernels take floats
    u = None if log_eps is None else logit_bound(q.detach(), k_cache.detach(), cache_seqlens, problem, qk_bound)
    delta = None
    if log_eps is not None and (backend == "torch" or return_stats):
        delta = cache_threshold(u, cache_seqlens, problem, log_eps)
    if backend == "triton":
        eps = 0.0 if log_eps is None else float(log_eps)  # unused when u is None (exact)
        o = decode_attention_op(q, k_cache, v_cache, c_cache, cache_seqlens, u, eps, problem.sm_scale, DECODE_BLOCK)
    else:
        o = cache_attention_torch(q, k_cache, v_cache, c_cache, cache_seqlens, delta, problem)
    return o if not return_stats else (o, cache_stats(c_cache, cache_seqlens, delta, problem.q_len))
