"""The boundary search on its own: bound, threshold and tile boundaries, as ``forgetting_attention`` runs them.

Kept apart from ``attention`` (which calls ``run_plan``) so that benchmarks and block masks can plan without
running attention, and so that ``acp`` (the formulas) depends on nothing above it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .acp import DEFAULT_LOG_EPS, AcpPlan, plan_tiles, qk_bound_from_data, threshold, threshold_from_arg
from .config import kernel_config
from .gate import cumulative_gate
from .validate import Problem, check_inputs


def run_plan(
    q: Tensor,
    k: Tensor,
    c_t: Tensor,
    problem: Problem,
    log_eps: float,
    qk_bound: float | Tensor | None,
    tile_m: int,
    tile_n: int,
) -> AcpPlan:
    """The ACP plan of one call: q (total_q, Hq, D), k (total_k, Hkv, D), c_t (Hq, total_k) float64."""
    with torch.no_grad():
        if qk_bound is None:
            delta = threshold(qk_bound_from_data(q, k, problem), problem, log_eps)
        else:
            delta = threshold_from_arg(qk_bound, problem, log_eps, q.device)
        if not c_t.is_cuda:
            return plan_tiles(c_t.detach(), delta, problem, tile_m, tile_n)
        from .triton_plan import tile_plan  # one launch instead of ~20 small torch ops (its tested twin)

        kv_lo, q_hi = tile_plan(c_t.detach(), delta, problem, tile_m, tile_n)
        return AcpPlan(tile_m, tile_n, kv_lo, q_hi, problem)


def prepare_search(
    q: Tensor,
    k: Tensor,
    log_fgate: Tensor,
    *,
    sm_scale: float | None = None,
    cu_seqlens: Tensor | None = None,
    max_seqlen: int | None = None,
    log_eps: float = DEFAULT_LOG_EPS,
    qk_bound: float | Tensor | None = None,
    tile_m: int | None = None,
    tile_n: int | None = None,
) -> Callable[[], AcpPlan]:
    """Validate and build the cumulative gate once; return the boundary search (bound, threshold, tile
    boundaries) on those inputs as a no-argument function, for timing it alone.

    Takes ``forgetting_attention``'s arguments (v is not needed; ``log_eps`` must not be None) plus optional
    ``tile_m``/``tile_n`` to override the device's ACP tile grid.
    """
    if log_eps is None:
        raise ValueError("the boundary search needs a log_eps (None means no pruning)")
    problem = check_inputs(q, k, k, log_fgate, sm_scale, cu_seqlens, max_seqlen, log_eps, "torch")
    cfg = kernel_config(q.device, problem.head_dim)
    c_t = cumulative_gate(log_fgate.reshape(-1, problem.n_heads), problem.cu_k, problem.uniform, problem.num_seqs)
    qp, kp = q.reshape(-1, *q.shape[2:]), k.reshape(-1, *k.shape[2:])
    tm, tn = tile_m or cfg.tile_m, tile_n or cfg.tile_n
    return lambda: run_plan(qp, kp, c_t, problem, log_eps, qk_bound, tm, tn)


def make_plan(q: Tensor, k: Tensor, log_fgate: Tensor, **kwargs) -> AcpPlan:
    """The boundary search ``forgetting_attention`` runs, on its own (for benchmarks and block masks); takes
    ``prepare_search``'s arguments."""
    return prepare_search(q, k, log_fgate, **kwargs)()
