"""The kernels as torch.library custom ops, so that torch.compile treats each launch as one opaque call.

Without this, Dynamo traces into the Python launchers (shape arithmetic, cached constant tensors, the Triton
runtime, tensor descriptors) and breaks the graph around them; as an opaque op a compiled decode step is one
graph whose small ops Inductor fuses around the attention kernel (experiment 049), and a compiled training block
is one graph forward and backward (experiment 054).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .acp import AcpPlan
from .config import KernelConfig
from .validate import CacheProblem, Problem


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


# The training op: ``forgetting_attention``'s Triton path as two custom ops (forward, backward) joined by
# ``register_autograd``. The call's Problem travels as its tensors and numbers (``_problem`` rebuilds it).


def _problem(q: Tensor, k: Tensor, cu_q: Tensor, cu_k: Tensor, sm_scale: float, max_q: int, max_k: int, uniform: bool):
    B, _, Hq, D = q.shape
    return Problem(B, cu_q.shape[0] - 1, Hq, k.shape[2], D, max_q, max_k, uniform, cu_q, cu_k, sm_scale)


@torch.library.custom_op("foxacp::attention_fwd", mutates_args=())
def attention_fwd_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_fgate: Tensor,
    cu_q: Tensor,
    cu_k: Tensor,
    qk_bound: Tensor | None,
    qk_bound_value: float | None,
    log_eps: float | None,
    sm_scale: float,
    max_q: int,
    max_k: int,
    uniform: bool,
    cfg_ints: list[int],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The Triton forward on validated inputs -> o (B, Tq, Hq, D) and what the backward reads: lse (Hq, B*Tq)
    float32, c_t (Hq, B*Tk) float64, KC (B*Tk, Hq, 16) fp16, and the plan's kv_lo (N, Hq, num_m) and q_hi
    (N, Hq, num_n) int32 (both (0,) for exact attention). The bound is the tensor, else the float, else None
    (derived from the data). ``cfg_ints``: the KernelConfig (``KernelConfig.to_ints``), which the backward
    is given too: a config chosen at call time (``use_kernel_config``) may be gone by the backward."""
    from .triton_gate import table_scale  # imported lazily: Triton compiles on first use
    from .triton_op import _forward, packed, prepare

    problem = _problem(q, k, cu_q, cu_k, sm_scale, max_q, max_k, uniform)
    cfg, scale = KernelConfig.from_ints(tuple(cfg_ints)), table_scale(sm_scale)
    bound = qk_bound if qk_bound is not None else qk_bound_value
    c_t, kc, plan = prepare(q, k, log_fgate, problem, log_eps, bound, cfg, scale)
    o, lse = _forward(*packed(q, k, v), c_t, kc, problem, plan, cfg, scale)
    no_plan = torch.empty(0, dtype=torch.int32, device=q.device)
    kv_lo, q_hi = (no_plan, no_plan.clone()) if plan is None else (plan.kv_lo, plan.q_hi)
    return o.view(q.shape), lse, c_t, kc, kv_lo, q_hi


@attention_fwd_op.register_fake
def _attention_fwd_fake(q, k, v, log_fgate, cu_q, cu_k, qk_bound, qk_bound_value, log_eps, sm_scale, max_q, max_k,
                        uniform, cfg_ints):  # fmt: skip
    from .triton_kernels import KC_COLS

    (B, Tq, Hq, _), Tk, n = q.shape, k.shape[1], cu_q.shape[0] - 1
    cfg = KernelConfig.from_ints(tuple(cfg_ints))
    plan_shapes = [(0,), (0,)]
    if log_eps is not None:
        plan_shapes = [(n, Hq, -(-max_q // cfg.tile_m)), (n, Hq, -(-max_k // cfg.tile_n))]
    return (
        q.new_empty(q.shape),
        q.new_empty(Hq, B * Tq, dtype=torch.float32),
        q.new_empty(Hq, B * Tk, dtype=torch.float64),
        q.new_empty(B * Tk, Hq, KC_COLS.value, dtype=torch.float16),
        *(q.new_empty(s, dtype=torch.int32) for s in plan_shapes),
    )


@torch.library.custom_op("foxacp::attention_bwd", mutates_args=())
def attention_bwd_op(
    do: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_fgate: Tensor,
    o: Tensor,
    lse: Tensor,
    c_t: Tensor,
    kc: Tensor,
    kv_lo: Tensor,
    q_hi: Tensor,
    cu_q: Tensor,
    cu_k: Tensor,
    sm_scale: float,
    max_q: int,
    max_k: int,
    uniform: bool,
    cfg_ints: list[int],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The Triton backward of ``attention_fwd_op`` (with the forward's config) -> dq, dk, dv, d log_fgate in their
    inputs' shapes."""
    from .triton_gate import table_scale
    from .triton_op import backward_unpacked, packed

    problem = _problem(q, k, cu_q, cu_k, sm_scale, max_q, max_k, uniform)
    cfg = KernelConfig.from_ints(tuple(cfg_ints))
    plan = None if kv_lo.numel() == 0 else AcpPlan(cfg.tile_m, cfg.tile_n, kv_lo, q_hi, problem)
    gates = log_fgate.reshape(-1, problem.n_heads)
    qp, kp, vp, op = packed(q, k, v, o)
    grads = backward_unpacked(do, qp, kp, vp, gates, c_t, op, lse, kc, problem, plan, cfg, table_scale(sm_scale))
    return tuple(g.view(t.shape) for g, t in zip(grads, (q, k, v, log_fgate), strict=True))


@attention_bwd_op.register_fake
def _attention_bwd_fake(do, q, k, v, log_fgate, *args):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), log_fgate.new_empty(log_fgate.shape)


def _attention_setup(ctx, inputs, output) -> None:
    q, k, v, log_fgate, cu_q, cu_k, _, _, _, sm_scale, max_q, max_k, uniform, cfg_ints = inputs
    o, lse, c_t, kc, kv_lo, q_hi = output
    ctx.save_for_backward(q, k, v, log_fgate, o, lse, c_t, kc, kv_lo, q_hi, cu_q, cu_k)
    ctx.numbers = sm_scale, max_q, max_k, uniform, cfg_ints


def _attention_backward(ctx, do, *_):
    dq, dk, dv, dg = attention_bwd_op(do, *ctx.saved_tensors, *ctx.numbers)
    return dq, dk, dv, dg, *([None] * 10)


attention_fwd_op.register_autograd(_attention_backward, setup_context=_attention_setup)


def opaque_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_fgate: Tensor,
    problem: Problem,
    log_eps: float | None,
    qk_bound: float | Tensor | None,
    cfg: KernelConfig,
) -> tuple[Tensor, AcpPlan | None]:
    """``forgetting_attention``'s Triton path as one custom op (validated inputs) -> o (B, Tq, Hq, D) and the
    ACP plan (None for exact attention), for its statistics."""
    tensor_bound = qk_bound if isinstance(qk_bound, Tensor) else None
    value = None if qk_bound is None or tensor_bound is not None else float(qk_bound)
    o, _, _, _, kv_lo, q_hi = attention_fwd_op(
        q, k, v, log_fgate, problem.cu_q, problem.cu_k, tensor_bound, value, log_eps, problem.sm_scale,
        problem.max_q, problem.max_k, problem.uniform, cfg.to_ints(),
    )  # fmt: skip
    return o, None if log_eps is None else AcpPlan(cfg.tile_m, cfg.tile_n, kv_lo, q_hi, problem)


@torch.library.custom_op("foxacp::skinny_partials", mutates_args=())
def skinny_partials_op(x: Tensor, weight: Tensor) -> Tensor:
    """``triton_skinny.skinny_partials``: x (M, K), weight (N, K) -> float32 (splits, M, N) summing to x @ weight.T,
    M <= its MAX_ROWS."""
    from .triton_skinny import skinny_partials  # imported lazily: Triton compiles on first use

    _check_skinny(x, weight)
    return skinny_partials(x, weight)


def _check_skinny(x: Tensor, weight: Tensor) -> None:
    """The kernel's contract (``skinny_linear`` routes only such calls here); else it reads out of bounds or
    leaves rows unwritten. Raises ValueError."""
    from .skinny import MAX_ROWS

    ok = x.dim() == weight.dim() == 2 and 0 < x.shape[0] <= MAX_ROWS and weight.shape[1] == x.shape[1]
    if not ok or x.stride(-1) != 1 or weight.stride(-1) != 1 or (x.dtype, x.device) != (weight.dtype, weight.device):
        raise ValueError(
            f"skinny_partials takes x (M <= {MAX_ROWS}, K) and weight (N, K), unit stride along K, one dtype and "
            f"device; got x {tuple(x.shape)} strides {x.stride()} {x.dtype}, weight {tuple(weight.shape)} strides "
            f"{weight.stride()} {weight.dtype}"
        )


@skinny_partials_op.register_fake
def _skinny_partials_fake(x, weight):
    from .triton_skinny import split_k

    _check_skinny(x, weight)
    splits = split_k(weight.shape[0], x.shape[1], x.device)
    return x.new_empty(splits, x.shape[0], weight.shape[0], dtype=torch.float32)
