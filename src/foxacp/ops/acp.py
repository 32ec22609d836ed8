"""Adaptive Computation Pruning: the logit bound, the threshold, the tile boundaries and their statistics.

With |sm_scale * q_i . k_j| <= U for one (sequence, head) and L keys, every entry with
D_ij < delta = -2U - log(L) + log(eps) has attention weight below eps / L, so skipping all of them drops at
most eps of any row's mass: the row's normaliser is at least e^-U (its own key has D = 0), each pruned term at
most e^(U + D_ij) (docs/architecture.md states the proof). c is non-increasing, so the largest D in a tile is
c[first row] - c[last column], and the prunable key tiles of a query tile form a prefix: a searchsorted of
c[first row] - delta into the non-increasing tile-end values of c finds every boundary at once.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from .gate import sequence_ids
from .validate import Problem, value_checks_on

DEFAULT_LOG_EPS = -10.0  # eps = e^-10 ~ 4.5e-5, below bf16 rounding: the pruned result is virtually exact


@dataclass
class AcpStats:
    """Tiles visited and causal tiles per query head (summed over sequences) on the ACP tile grid.

    The forward and both backward kernels prune the same tiles, so one count serves all three.
    Readable as attributes or as ``stats["flop_saving"]``.
    """

    tiles_visited: Tensor  # (Hq,) int64
    tiles_causal: Tensor  # (Hq,) int64
    tile_m: int
    tile_n: int

    @property
    def flop_saving(self) -> float:
        """1 - visited / causal over all heads: the share of causal attention FLOPs skipped."""
        causal = int(self.tiles_causal.sum())
        return 1.0 - int(self.tiles_visited.sum()) / causal if causal else 0.0

    @property
    def per_head_saving(self) -> Tensor:
        """(Hq,) float64: the saving of each query head."""
        return 1.0 - self.tiles_visited.double() / self.tiles_causal.clamp_min(1).double()

    def __getitem__(self, key: str):
        return getattr(self, key)


ACPStats = AcpStats  # its name before the Acp* names were made one style; kept for code written against it


@dataclass
class AcpPlan:
    """Which tiles the kernels visit.

    kv_lo[n, h, m]: index of the first key tile that query tile m of sequence n, head h visits (key tiles
    before it are pruned). q_hi[n, h, j]: number of query tiles that visit key tile j (the backward's
    mirror pointer: query tiles from there on have pruned it). Tiles are ``tile_m`` x ``tile_n``.
    """

    tile_m: int
    tile_n: int
    kv_lo: Tensor  # (N, Hq, num_m) int32
    q_hi: Tensor  # (N, Hq, num_n) int32
    problem: Problem

    @property
    def stats(self) -> AcpStats:
        """Visited and causal tiles per head (computed on demand: not on the kernels' path)."""
        _, row_ok, causal_hi = _query_tiles(self.problem, self.tile_m, self.tile_n)
        visited = (causal_hi[:, None, :] - self.kv_lo.long()).clamp_min(0) * row_ok[:, None, :]
        causal = causal_hi.sum().expand(self.problem.n_heads).clone()
        return AcpStats(visited.sum((0, 2)), causal, self.tile_m, self.tile_n)


def _segment_max(x: Tensor, problem: Problem, cu: Tensor) -> Tensor:
    """(total, H) -> (N, H): the maximum over each packed sequence."""
    n, heads = problem.num_seqs, x.shape[1]
    if problem.uniform:
        return x.view(n, -1, heads).amax(1)
    ids = sequence_ids(cu, x.shape[0])[:, None].expand(-1, heads)
    return x.new_zeros(n, heads).scatter_reduce_(0, ids, x, "amax")


def qk_bound_from_data(q: Tensor, k: Tensor, problem: Problem) -> Tensor:
    """U = sm_scale * max_i ||q_i|| * max_j ||k_j|| per (sequence, query head), by Cauchy-Schwarz.

    Norms are taken in float32 (one Triton pass over q and k on CUDA). Args: q (total_q, Hq, D),
    k (total_k, Hkv, D). Returns (N, Hq) float64.
    """
    with torch.no_grad():
        if q.is_cuda:
            from .triton_plan import max_norms

            q_max = max_norms(q, problem.cu_q, problem.num_seqs, problem.max_q)
            k_max = max_norms(k, problem.cu_k, problem.num_seqs, problem.max_k)
        else:
            norm = lambda x: torch.linalg.vector_norm(x.to(torch.float32), dim=-1)  # noqa: E731
            q_max = _segment_max(norm(q), problem, problem.cu_q)
            k_max = _segment_max(norm(k), problem, problem.cu_k)
        u = problem.sm_scale * q_max.double() * k_max.double().repeat_interleave(problem.group, dim=1)
        # A NaN or infinite q or k gives no bound: prune nothing there, so rows before the bad key stay exact and
        # causal (the reference's rows from it on are NaN too).
        return torch.nan_to_num(u, nan=math.inf)


def check_bound(qk_bound: float | Tensor, q: Tensor, k: Tensor, problem: Problem) -> None:
    """Raise ValueError where a given U is below sm_scale * max||q|| * max||k|| of a (sequence, head): there it
    may be below the true max |sm_scale q.k|, and the eps guarantee would not hold. q (B, Tq, Hq, D), k
    (B, Tk, Hkv, D)."""
    data = qk_bound_from_data(q.detach().reshape(-1, *q.shape[2:]), k.detach().reshape(-1, *k.shape[2:]), problem)
    given = qk_bound_from_arg(qk_bound, problem, q.device)
    short = given < data * (1 - 1e-6)  # float32 norms: a bound equal to the data's passes
    if bool(short.any()):
        n, h = (int(i) for i in short.nonzero()[0])
        raise ValueError(
            f"qk_bound {given[n, h].item():.6g} is below sm_scale * max||q|| * max||k|| = {data[n, h].item():.6g} "
            f"(sequence {n}, query head {h}): it cannot certify ACP's eps guarantee; pass a larger bound or None"
        )


def qk_bound_from_arg(qk_bound: float | Tensor, problem: Problem, device: torch.device) -> Tensor:
    """Broadcast a user-given U (float, (Hq,), or broadcastable to (N, Hq)) to (N, Hq) float64.

    A tensor's values (finite, >= 0) are checked only while value checks are on: the check reads them back
    to the host (see ``set_value_checks``).
    """
    shape = (problem.num_seqs, problem.n_heads)
    if isinstance(qk_bound, Tensor):
        u = qk_bound.detach().to(device=device, dtype=torch.float64)
        try:
            u = torch.broadcast_to(u, shape)
        except RuntimeError as err:
            raise ValueError(f"qk_bound of shape {tuple(u.shape)} does not broadcast to (N, Hq) = {shape}") from err
        ok = not value_checks_on() or bool(((u >= 0) & torch.isfinite(u)).all())
    elif isinstance(qk_bound, numbers.Real) and not isinstance(qk_bound, bool):
        ok = math.isfinite(qk_bound) and qk_bound >= 0
        u = _constant(float(qk_bound), shape, device)
    else:
        raise TypeError(f"qk_bound must be a float or a tensor, got {type(qk_bound).__name__}")
    if not ok:
        raise ValueError("qk_bound must be finite and >= 0")
    return u


@functools.lru_cache(maxsize=64)
def _constant(value: float, shape: tuple[int, int], device: torch.device) -> Tensor:
    """A cached float64 tensor filled with ``value`` (read-only by convention): no allocation per call."""
    return torch.full(shape, value, dtype=torch.float64, device=device)


def threshold(u: Tensor | float, problem: Problem, log_eps: float) -> Tensor | float:
    """delta = -2U - log(L) + log(eps) per (sequence, head); L is the sequence's key length. (N, Hq) float64.

    On a uniform batch ``u`` may also be a Python float (the result is then one float)."""
    if problem.uniform:
        return u * -2.0 + (log_eps - math.log(problem.max_k))
    k_len = (problem.cu_k[1:] - problem.cu_k[:-1]).double()
    return -2.0 * u - torch.log(k_len)[:, None] + log_eps


def threshold_from_arg(qk_bound: float | Tensor, problem: Problem, log_eps: float, device: torch.device) -> Tensor:
    """``threshold`` of a user-given bound. A float bound on a uniform batch gives a cached constant, the same
    float64 value ``threshold`` computes, with no device launch (small calls are host bound:
    experiments/034-small-call-costs)."""
    u = qk_bound_from_arg(qk_bound, problem, device)
    if isinstance(qk_bound, Tensor) or not problem.uniform:
        return threshold(u, problem, log_eps)
    value = threshold(float(qk_bound), problem, log_eps)  # uniform: the same formula on a Python float
    return _constant(value, (problem.num_seqs, problem.n_heads), device)


def _query_tiles(problem: Problem, tile_m: int, tile_n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per (sequence, query tile): its first row, whether it exists, and its causal key-tile count.

    Returns (N, num_m) tensors: the position (key index) of the first row, ``row_ok``, and ``causal_hi``,
    the number of key tiles up to the one holding the tile's last row.
    """
    q_len = (problem.cu_q[1:] - problem.cu_q[:-1]).long()[:, None]
    k_len = (problem.cu_k[1:] - problem.cu_k[:-1]).long()[:, None]
    first_row = torch.arange(-(-problem.max_q // tile_m), device=q_len.device)[None, :] * tile_m
    row_ok = first_row < q_len
    last_pos = torch.minimum(first_row + tile_m, q_len) + (k_len - q_len)
    causal_hi = torch.where(row_ok, -(-last_pos // tile_n), 0)
    first_pos = (first_row + (k_len - q_len)).clamp_max(k_len - 1)
    return first_pos, row_ok, causal_hi


def plan_tiles(c: Tensor, delta: Tensor, problem: Problem, tile_m: int, tile_n: int) -> AcpPlan:
    """Find the tile boundaries for every (sequence, head, query tile) with two batched searchsorteds.

    Args:
        c: (Hq, total_k) float64 cumulative gate.
        delta: (N, Hq) float64 thresholds.
    """
    dev = c.device
    k0 = problem.cu_k[:-1].long()[:, None]
    k_len = problem.cu_k[1:].long()[:, None] - k0
    num_n = -(-problem.max_k // tile_n)
    first_pos, row_ok, _ = _query_tiles(problem, tile_m, tile_n)
    c_row = c[:, k0 + first_pos].permute(1, 0, 2)  # (N, Hq, num_m)

    tile = torch.arange(num_n, device=dev)[None, :]
    col_ok = tile * tile_n < k_len  # (N, num_n)
    col_end = (torch.minimum((tile + 1) * tile_n, k_len) - 1).clamp_min(0)
    c_end = c[:, k0 + col_end].permute(1, 0, 2)  # (N, Hq, num_n)
    # Pruned iff c_row - c_end < delta, i.e. -c_end < delta - c_row; -c_end ascends along the tiles. A NaN gate
    # (value checks off) makes c NaN from there on: those tiles count as kept, as in the Triton twin, so rows
    # before it stay causal and exact.
    neg_end = torch.where(col_ok[:, None, :], -c_end, torch.inf).nan_to_num(nan=torch.inf).contiguous()
    thresh = (delta[:, :, None] - c_row).nan_to_num(nan=-torch.inf).contiguous()
    kv_lo = torch.searchsorted(neg_end, thresh, side="left")
    kv_lo = torch.where(row_ok[:, None, :], kv_lo, num_n).to(torch.int32)
    tiles = tile.to(torch.int32).expand(neg_end.shape).contiguous()
    q_hi = torch.where(col_ok[:, None, :], torch.searchsorted(kv_lo, tiles, side="right"), 0).to(torch.int32)
    return AcpPlan(tile_m, tile_n, kv_lo, q_hi, problem)


def dense_stats(problem: Problem, tile_m: int, tile_n: int) -> AcpStats:
    """Statistics of exact attention: every causal tile visited."""
    causal = _query_tiles(problem, tile_m, tile_n)[2].sum().expand(problem.n_heads).clone()
    return AcpStats(causal.clone(), causal, tile_m, tile_n)
