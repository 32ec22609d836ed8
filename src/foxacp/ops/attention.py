"""The public op: ``forgetting_attention``, dispatching to the Triton, PyTorch or reference backend."""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from .acp import DEFAULT_LOG_EPS, AcpPlan, AcpStats, check_bound, dense_stats, qk_bound_from_data
from .blockwise import blockwise_attention
from .config import KernelConfig, kernel_config
from .gate import cumulative_gate
from .reference import reference_attention
from .search import run_plan
from .validate import Problem, auto_backend, check_inputs, value_checks_on

__all__ = ["DEFAULT_LOG_EPS", "forgetting_attention"]

# Under torch.compile, run the Triton path as one opaque custom op forward and backward (``custom_ops``);
# False lets Dynamo trace into it as in eager calls (experiments/054-opaque-training-op times both).
OPAQUE_WHEN_COMPILING = True


@functools.cache
def _warn_tables(what: str) -> None:
    warnings.warn(
        f"{what} is outside the range the Triton kernels' score tables represent exactly; "
        "forgetting_attention takes the PyTorch path for it",
        stacklevel=3,
    )


def _largest_logit(q: Tensor, k: Tensor, problem: Problem) -> float:
    """sm_scale * max||q|| * max||k|| over the call (>= every |sm_scale q.k|; inf where q or k is not finite)."""
    qp, kp = (t.detach().reshape(-1, *t.shape[2:]) for t in (q, k))
    return float(qk_bound_from_data(qp, kp, problem).max())


def forgetting_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_fgate: Tensor,
    *,
    sm_scale: float | None = None,
    cu_seqlens: Tensor | None = None,
    max_seqlen: int | None = None,
    log_eps: float | None = DEFAULT_LOG_EPS,
    qk_bound: float | Tensor | None = None,
    check_qk_bound: bool = False,
    return_stats: bool = False,
    backend: str | None = None,
) -> Tensor | tuple[Tensor, AcpStats]:
    """Causal softmax attention with a forget gate, skipping tiles that ACP proves negligible.

    o_i = sum_j softmax_j(sm_scale * q_i . k_j + D_ij) v_j over j <= i, with D_ij = sum_{l=j+1..i} log f_l.
    With ``log_eps`` set, tiles whose decay is below delta = -2U - log(L) + log_eps are skipped; this moves
    each output row by at most 2 * eps * max_j ||v_j||.

    Args:
        q: (B, Tq, Hq, D) queries; fp16/bf16 on GPU, fp16/fp32 through the interpreter and PyTorch paths,
            float64 with ``backend="reference"`` (and "torch").
        k, v: (B, Tk, Hkv, D), same dtype; Hq % Hkv == 0 (grouped-query attention); Tq <= Tk, queries
            aligned to the end of the keys.
        log_fgate: (B, Tk, Hq) float32 log forget gates, <= 0 (one per query head and key). -inf (f = 0) is an
            exact reset: every backend raises gates to ``foxacp.ops.gate.LOG_FGATE_FLOOR`` (-1e6), where every
            weight across the token is 0 in float64, and gives them gradient 0. NaN is refused.
        sm_scale: softmax scale on q . k; default 1 / sqrt(D). The decay D is never scaled.
        cu_seqlens: (N+1,) int32 offsets of packed sequences (needs B == 1 and Tq == Tk).
        max_seqlen: longest packed sequence (computed from cu_seqlens when None).
        log_eps: natural log of the ACP tolerance eps; None computes exact attention.
        qk_bound: U >= |sm_scale * q . k|: a float, an (Hq,) tensor, or broadcastable to (B or N, Hq).
            None derives it from the data per (sequence, head). A bound below the true one voids the eps
            guarantee silently; ``check_qk_bound=True`` verifies it against sm_scale * max||q|| * max||k|| per
            (sequence, head) and raises ValueError where it is lower (one pass over q and k, one host sync).
        return_stats: also return ``AcpStats`` (tiles visited / causal per head, ``flop_saving``).
        backend: None (auto: Triton for the Triton head dims (16, 32, 64, 128), on CUDA for fp16/bf16 and on the
            CPU under TRITON_INTERPRET=1 for fp16/fp32; else PyTorch), "triton", "torch" (blockwise, same tile
            skipping) or "reference" (dense). The Triton kernels' score tables serve logits
            |sm_scale * q . k| up to ``triton_gate.LOGIT_LIMIT`` (960): while value checks are on
            (``set_value_checks``), a call whose sm_scale * max||q|| * max||k|| exceeds it takes the PyTorch
            path with a warning; with them off, ruling such logits out is the caller's part (QK-norm bounds
            them by its gains).
    Returns:
        o: (B, Tq, Hq, D) in q's dtype, or (o, stats) when ``return_stats``.
    Raises:
        TypeError, ValueError: on bad input, naming the argument (see ``foxacp.ops.validate``).
    """
    backend = auto_backend(q, fp32_on_gpu=False) if backend is None and isinstance(q, Tensor) else backend
    problem = check_inputs(q, k, v, log_fgate, sm_scale, cu_seqlens, max_seqlen, log_eps, backend)
    log_eps = None if log_eps is None else float(log_eps)  # a NumPy float passes the checks; the kernels take floats
    cfg = kernel_config(q.device, problem.head_dim)
    if check_qk_bound and qk_bound is not None:
        check_bound(qk_bound, q, k, problem)
    if backend == "triton":
        from .triton_gate import LOGIT_LIMIT, table_scale  # imported lazily: Triton compiles on first use
        from .triton_op import prepare, triton_attention

        # Dynamo warns on lru_cache-wrapped calls; the cache only saves host time in eager calls.
        scale = (table_scale.__wrapped__ if torch.compiler.is_compiling() else table_scale)(problem.sm_scale)
        if scale is None:
            _warn_tables(f"sm_scale={problem.sm_scale:g}")
            backend = "torch"
        elif value_checks_on() and (largest := _largest_logit(q, k, problem)) > LOGIT_LIMIT:
            _warn_tables(f"a logit bound sm_scale * max||q|| * max||k|| of {largest:.4g} (above {LOGIT_LIMIT:g})")
            backend = "torch"
    if backend == "triton" and OPAQUE_WHEN_COMPILING and torch.compiler.is_compiling():
        # Under torch.compile the whole call is one opaque custom op (and one for its backward), so that a
        # compiled block stays one graph around it (experiments/054-opaque-training-op).
        from .custom_ops import opaque_attention

        o, plan = opaque_attention(q, k, v, log_fgate, problem, log_eps, qk_bound, cfg)
        return o if not return_stats else (o, _stats(plan, problem, cfg))
    if backend == "triton":
        # The Triton op takes the unpacked tensors and reshapes inside its autograd function (no view nodes in
        # the graph: host time per call, experiments/034-small-call-costs). The gate's scan (with the key table)
        # is one launch.
        c_t, kc, plan = prepare(q, k, log_fgate, problem, log_eps, qk_bound, cfg, scale)
        o = triton_attention(q, k, v, log_fgate, c_t, kc, problem, plan, cfg, scale)
        return o if not return_stats else (o, _stats(plan, problem, cfg))

    qp, kp, vp = (t.reshape(-1, *t.shape[2:]) for t in (q, k, v))
    c_t = cumulative_gate(log_fgate.reshape(-1, problem.n_heads), problem.cu_k, problem.uniform, problem.num_seqs)
    plan = None
    if log_eps is not None:
        plan = run_plan(qp, kp, c_t, problem, log_eps, qk_bound, cfg.tile_m, cfg.tile_n)
    if backend == "torch":
        o = blockwise_attention(qp, kp, vp, c_t.t(), problem, plan, cfg.tile_m, cfg.tile_n)
    else:
        o = reference_attention(qp, kp, vp, c_t.t(), problem, plan)
    o = o.to(q.dtype).view(q.shape)
    return o if not return_stats else (o, _stats(plan, problem, cfg))


def _stats(plan: AcpPlan | None, problem: Problem, cfg: KernelConfig) -> AcpStats:
    """The plan's tile statistics, or exact attention's (every causal tile) without a plan."""
    return plan.stats if plan is not None else dense_stats(problem, cfg.tile_m, cfg.tile_n)
