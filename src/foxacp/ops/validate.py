"""Argument checking for ``forgetting_attention``: every bad input gets a ValueError or TypeError naming it."""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .config import TRITON_HEAD_DIMS, interpreting

BACKENDS = ("triton", "torch", "reference")
_value_checks = True


def set_value_checks(enabled: bool) -> bool:
    """Turn the checks of input values on or off; they are on by default: gates <= 0 and not NaN, (Triton
    training path) logits within the score tables' range (``forgetting_attention``'s ``backend``), and
    cu_seqlens starting at 0, increasing, ending at the packed length and within max_seqlen (when max_seqlen is
    None they are always read, to find it).

    Shapes, dtypes and devices are always checked. The value check reads the gates back to the host: on a
    GPU that is one synchronisation per call, which stops the host from running ahead of the device. Turn
    it off in tuned training loops and benchmarks (the trainer does, after its first step); it is skipped
    while torch.compile traces. Returns the previous setting.
    """
    global _value_checks
    previous, _value_checks = _value_checks, bool(enabled)
    return previous


def value_checks_on() -> bool:
    """Whether checks that read tensor values back to the host (a synchronisation) run on this call: not while
    torch.compile traces, nor while a CUDA graph is being captured (a read there invalidates the capture, e.g.
    torch.compile's "reduce-overhead" recording a block, experiments/068-train-host-cost)."""
    if not _value_checks or torch.compiler.is_compiling():
        return False
    return not (torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing())


def first_order_only(backward: Callable) -> Callable:
    """Decorate an autograd.Function's backward whose kernels record no graph. ``once_differentiable`` alone
    raises on a double backward only when a gradient flowing in requires grad: after ``autograd.grad(loss, x,
    create_graph=True)`` from a plain sum the returned gradient would silently be a constant, and a gradient
    penalty on it would drop its second-order terms. A backward run while recording a graph is refused here."""
    inner = once_differentiable(backward)

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        if torch.is_grad_enabled() and not torch.compiler.is_compiling():
            raise RuntimeError(f"{backward.__qualname__}: not twice differentiable (create_graph=True)")
        return inner(ctx, *grads)

    return wrapper


def _uniform_offsets(batch: int, length: int, device: torch.device) -> Tensor:
    """[0, length, 2 length, ..., batch length] int32, cached for eager calls (their host cost, experiment 034);
    made afresh while compiling, where a cache lookup would pin the graph to one length and its write is a side
    effect that activation checkpointing refuses to trace."""
    if torch.compiler.is_compiling():
        return torch.arange(batch + 1, device=device, dtype=torch.int32) * length
    key = (batch, length, device)
    if key not in _OFFSETS:
        _OFFSETS[key] = torch.arange(batch + 1, device=device, dtype=torch.int32) * length
    return _OFFSETS[key]


_OFFSETS: dict[tuple[int, int, torch.device], Tensor] = {}
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class Problem:
    """The shape of one call, in the packed layout every backend works in.

    Tensors are viewed as q (total_q, Hq, D), k/v (total_k, Hkv, D), log_fgate (total_k, Hq); sequence n
    owns query rows cu_q[n]:cu_q[n+1] and key rows cu_k[n]:cu_k[n+1]. A plain batch is N = B equal
    sequences (``uniform``).
    """

    batch: int
    num_seqs: int
    n_heads: int
    kv_heads: int
    head_dim: int
    max_q: int
    max_k: int
    uniform: bool
    cu_q: Tensor
    cu_k: Tensor
    sm_scale: float

    @property
    def group(self) -> int:
        return self.n_heads // self.kv_heads


@dataclass(frozen=True)
class CacheProblem:
    """The shape of one call: B sequences of Tq new queries against a cache of Tmax slots."""

    batch: int
    q_len: int
    max_len: int
    n_heads: int
    kv_heads: int
    head_dim: int
    sm_scale: float

    @property
    def group(self) -> int:
        return self.n_heads // self.kv_heads

    @property
    def num_seqs(self) -> int:
        """The sequences (``acp.qk_bound_from_arg`` broadcasts a bound to (num_seqs, n_heads))."""
        return self.batch

    def packed(self, cache_seqlens: Tensor) -> Problem:
        """The call as ``acp.threshold`` sees it: sequence b has Tq queries and cache_seqlens[b] keys."""
        dev = cache_seqlens.device
        cu_q = torch.arange(self.batch + 1, device=dev, dtype=torch.int32) * self.q_len
        cu_k = torch.nn.functional.pad(cache_seqlens.cumsum(0, dtype=torch.int32), (1, 0))
        shape = (self.batch, self.batch, self.n_heads, self.kv_heads, self.head_dim, self.q_len, self.max_len)
        return Problem(*shape, False, cu_q, cu_k, self.sm_scale)


def _check_cu_seqlens(cu: Tensor, total: int, device: torch.device, read: bool) -> tuple[Tensor, list[int] | None]:
    """cu_seqlens, contiguous, and its values read back to the host and checked when ``read`` (else None)."""
    if not isinstance(cu, Tensor):
        raise TypeError("cu_seqlens must be a torch.Tensor")
    if cu.dtype != torch.int32:
        raise TypeError(f"cu_seqlens must be int32, got {cu.dtype}")
    if cu.dim() != 1 or cu.numel() < 2:
        raise ValueError(f"cu_seqlens must have shape (N+1,) with N >= 1, got {tuple(cu.shape)}")
    if cu.device != device:
        raise ValueError(f"cu_seqlens is on {cu.device} but q is on {device}")
    cu = cu.contiguous()  # the kernels read it as a plain array
    if not read:
        return cu, None
    offsets = cu.tolist()
    if offsets[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {offsets[0]}")
    if any(b <= a for a, b in zip(offsets, offsets[1:], strict=False)):
        raise ValueError("cu_seqlens must be strictly increasing (no empty sequences)")
    if offsets[-1] != total:
        raise ValueError(f"cu_seqlens must end at the packed length {total}, got {offsets[-1]}")
    return cu, offsets


def needs_grad(*tensors: Tensor) -> bool:
    """Whether autograd will differentiate through a call on ``tensors`` (the decode kernels have no backward)."""
    return torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


def refuse_grad(backend: str, *tensors: Tensor) -> None:
    """Raise ValueError when the Triton decode kernels would be asked for a gradient they do not have."""
    if backend == "triton" and needs_grad(*tensors):
        raise ValueError(
            "the Triton decode kernels have no backward: call under torch.no_grad(), or pass backend='torch' "
            "(or None, which picks it when a gradient is needed) to differentiate"
        )


def auto_backend(q: Tensor, *, fp32_on_gpu: bool = True) -> str:
    """The backend ``backend=None`` picks: Triton where its kernels take q (the Triton head dims; on CUDA fp16
    and bf16, and fp32 where ``fp32_on_gpu``; on the CPU under TRITON_INTERPRET=1, fp16 and fp32); PyTorch
    otherwise."""
    if q.shape[-1] not in TRITON_HEAD_DIMS:
        return "torch"
    if q.device.type == "cuda":
        ok = q.dtype in (torch.float16, torch.bfloat16) or (fp32_on_gpu and q.dtype == torch.float32)
    else:
        ok = interpreting() and q.dtype in (torch.float16, torch.float32)
    return "triton" if ok else "torch"


def check_kv_shapes(q: Tensor, k: Tensor, v: Tensor, k_name: str, v_name: str) -> None:
    """k (B, Tk, Hkv, D) must match q (B, Tq, Hq, D) in B and D, and v must equal k in shape."""
    if k.shape[0] != q.shape[0] or k.shape[3] != q.shape[3]:
        raise ValueError(f"{k_name} shape {tuple(k.shape)} does not match q shape {tuple(q.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"{v_name} shape {tuple(v.shape)} must equal {k_name} shape {tuple(k.shape)}")


def check_common(
    q: Tensor, Hq: int, Hkv: int, sm_scale: float | None, log_eps: float | None, backend: str, float64_backend: str
) -> float:
    """The checks every attention op shares: grouped heads, what the Triton kernels take, log_eps and sm_scale.
    Returns sm_scale (default 1 / sqrt(D)). ``float64_backend``: the backend to name for float64 inputs."""
    D = q.shape[-1]
    if Hq % Hkv:
        raise ValueError(f"query heads ({Hq}) must be a multiple of key/value heads ({Hkv})")
    if backend == "triton":
        if q.device.type != "cuda" and not interpreting():
            raise ValueError(
                f"backend='triton' needs CUDA tensors (q is on {q.device}), or TRITON_INTERPRET=1 set before "
                "foxacp is imported to run the kernels on the CPU; use backend='torch'"
            )
        if D not in TRITON_HEAD_DIMS:
            raise ValueError(f"head dim {D} is not supported by the triton backend; use one of {TRITON_HEAD_DIMS}")
        if q.dtype == torch.float64:
            raise TypeError(f"the triton backend takes fp16, bf16 or fp32; use backend={float64_backend!r} for float64")
        if q.dtype == torch.bfloat16 and q.device.type == "cpu":
            raise TypeError("bf16 is not supported by the Triton interpreter; use fp16 or fp32 on CPU")
    if log_eps is not None and not (_real(log_eps) and log_eps < 0):
        raise ValueError(f"log_eps must be a negative float (log of the tolerance) or None, got {log_eps!r}")
    if sm_scale is None:
        return 1.0 / math.sqrt(D)
    if not (_real(sm_scale) and math.isfinite(sm_scale) and sm_scale > 0):
        raise ValueError(f"sm_scale must be a positive finite float, got {sm_scale!r}")
    return float(sm_scale)


def _real(x) -> bool:
    """A real number (Python's or NumPy's floats and ints), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_fgate: Tensor,
    sm_scale: float | None,
    cu_seqlens: Tensor | None,
    max_seqlen: int | None,
    log_eps: float | None,
    backend: str,
) -> Problem:
    """Validate the arguments of ``forgetting_attention`` and describe the problem.

    Raises:
        TypeError: a non-tensor argument, a wrong dtype.
        ValueError: mismatched shapes or devices, Tq > Tk, Hq not a multiple of Hkv, positive or NaN gates
            (-inf, an exact reset, is accepted), a head dim or dtype the backend does not support, malformed
            cu_seqlens, a positive or NaN log_eps, an unknown backend.
    """
    for name, t in (("q", q), ("k", k), ("v", v), ("log_fgate", log_fgate)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be None or one of {BACKENDS}, got {backend!r}")
    for name, t, nd in (("q", q, 4), ("k", k, 4), ("v", v, 4), ("log_fgate", log_fgate, 3)):
        if t.dim() != nd:
            raise ValueError(f"{name} must have {nd} dims, got shape {tuple(t.shape)}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
    if q.dtype not in _FLOATS:
        raise TypeError(f"q must be a floating tensor (fp16, bf16, fp32, fp64), got {q.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but q has {q.dtype}")
    gate_dtypes = (torch.float32, torch.float64) if backend == "reference" else (torch.float32,)
    if log_fgate.dtype not in gate_dtypes:
        raise TypeError(f"log_fgate must be float32, got {log_fgate.dtype}")

    B, Tq, Hq, D = q.shape
    _, Tk, Hkv, _ = k.shape
    check_kv_shapes(q, k, v, "k", "v")
    if tuple(log_fgate.shape) != (B, Tk, Hq):
        raise ValueError(f"log_fgate must have shape (B, Tk, Hq) = {(B, Tk, Hq)}, got {tuple(log_fgate.shape)}")
    if Tq > Tk:
        raise ValueError(f"queries ({Tq}) cannot outnumber keys ({Tk}): queries align to the end of the keys")
    if min(B, Tq, Hq, Hkv, D) == 0:
        raise ValueError(f"empty input: q {tuple(q.shape)}, k {tuple(k.shape)}")
    sm_scale = check_common(q, Hq, Hkv, sm_scale, log_eps, backend, float64_backend="reference")
    if backend == "triton" and q.is_cuda and q.dtype == torch.float32:
        raise TypeError("the Triton training kernels take fp16 or bf16 on a GPU (their products would round fp32 "
                        "to TF32); use backend='torch' for fp32")  # fmt: skip

    if value_checks_on():
        lo, hi = torch.aminmax(log_fgate.detach())
        lo, hi = lo.item(), hi.item()  # NaN fails both comparisons below
        if not (lo >= -math.inf and hi <= 0):
            raise ValueError("log_fgate must be <= 0 everywhere (found positive or NaN values; -inf is a reset)")

    if cu_seqlens is None:
        cu_q, cu_k = _uniform_offsets(B, Tq, q.device), _uniform_offsets(B, Tk, q.device)
        return Problem(B, B, Hq, Hkv, D, Tq, Tk, True, cu_q, cu_k, float(sm_scale))

    if B != 1:
        raise ValueError(f"cu_seqlens needs packed inputs with batch size 1, got B={B}")
    if Tq != Tk:
        raise ValueError(f"cu_seqlens needs Tq == Tk, got {Tq} and {Tk}")
    if max_seqlen is not None and (isinstance(max_seqlen, bool) or not isinstance(max_seqlen, (int, torch.SymInt))):
        raise TypeError(f"max_seqlen must be an int, got {type(max_seqlen).__name__}")
    # The offsets are read back (a host sync, a graph break when compiling) only to check them or to find the
    # longest sequence; with max_seqlen given and value checks off (the trainer, torch.compile) they are not.
    cu_seqlens, offsets = _check_cu_seqlens(cu_seqlens, Tk, q.device, read=max_seqlen is None or value_checks_on())
    if offsets is not None:
        longest = max(b - a for a, b in zip(offsets, offsets[1:], strict=False))
        if max_seqlen is None:
            max_seqlen = longest
        elif max_seqlen < longest:
            raise ValueError(f"max_seqlen={max_seqlen} is shorter than the longest sequence ({longest})")
    n = cu_seqlens.shape[0] - 1
    uniform = n == 1 and max_seqlen == Tk
    return Problem(1, n, Hq, Hkv, D, max_seqlen, max_seqlen, uniform, cu_seqlens, cu_seqlens, float(sm_scale))
