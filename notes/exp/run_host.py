"""One device call: where the host time of a call goes (notes/kernels.md #34).

Per shape and mode: host time to issue one call (no syncs, the GPU queue never full), the part spent in
Triton launches (JITFunction.run timed per kernel), GPU time per call (events over the same loop), and
do_bench. Then micro-costs: a Triton launch with few / many arguments / a tensor descriptor, a torch op.

    PYTHONPATH=src:notes/exp python notes/exp/run_host.py
"""

from __future__ import annotations

import collections
import time

import run_acp
import torch
import triton
import triton.language as tl
from triton.runtime.jit import JITFunction
from triton.tools.tensor_descriptor import TensorDescriptor

import foxacp

LAUNCH = collections.defaultdict(float)
_run = JITFunction.run


def _timed_run(self, *args, **kwargs):
    t = time.perf_counter()
    try:
        return _run(self, *args, **kwargs)
    finally:
        LAUNCH[self.fn.__name__] += time.perf_counter() - t


WRAPPED = collections.defaultdict(float)


def wrap(owner, name: str, label: str) -> None:
    """Time every call of owner.name (host perf_counter) into WRAPPED[label]."""
    f = getattr(owner, name)

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            WRAPPED[label] += time.perf_counter() - t

    setattr(owner, name, timed)


def breakdown(leaves, do, D: int, eps, n: int = 40) -> str:
    """Host ms per fwd+bwd call inside each wrapped function (nested: a parent includes its children)."""
    f = lambda: foxacp.forgetting_attention(*leaves, log_eps=eps, qk_bound=D**0.5)  # noqa: E731
    for _ in range(3):
        f().backward(do)
    torch.cuda.synchronize()
    WRAPPED.clear()
    t_fwd = t_bwd = 0.0
    for _ in range(n):
        for x in leaves:
            x.grad = None
        t = time.perf_counter()
        o = f()
        t1 = time.perf_counter()
        o.backward(do)
        t_fwd, t_bwd = t_fwd + t1 - t, t_bwd + time.perf_counter() - t1
    torch.cuda.synchronize()
    cells = {"forward call": t_fwd, ".backward() call": t_bwd, **WRAPPED}
    return " | ".join(f"{k} {v * 1e3 / n:.3f}" for k, v in cells.items())


def host_per_call(fn, leaves, n: int = 40) -> tuple[float, float, dict[str, float]]:
    """(host ms per call, GPU ms per call, Triton launch ms per call by kernel)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    LAUNCH.clear()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    t = time.perf_counter()
    for _ in range(n):
        for x in leaves:
            x.grad = None
        fn()
    host = (time.perf_counter() - t) * 1e3 / n
    end.record()
    torch.cuda.synchronize()
    return host, start.elapsed_time(end) / n, {k: v * 1e3 / n for k, v in LAUNCH.items()}


@triton.jit
def _few(X, n):
    pass


@triton.jit
def _many(
    X,
    a0,
    a1,
    a2,
    a3,
    a4,
    a5,
    a6,
    a7,
    a8,
    a9,
    a10,
    a11,
    a12,
    a13,
    a14,
    a15,
    a16,
    a17,
    a18,
    a19,
    a20,
    a21,
    a22,
    a23,
    a24,
    a25,
    a26,
    a27,
    a28,
    a29,
    B: tl.constexpr,
    C: tl.constexpr,
    D: tl.constexpr,
):
    pass


@triton.jit
def _desc(d0, d1, d2, X):
    pass


def micro(label: str, fn, n: int = 2000) -> None:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    us = (time.perf_counter() - t) * 1e6 / n
    torch.cuda.synchronize()
    print(f"micro {label:40s} {us:7.1f} us/call", flush=True)


def main() -> None:
    JITFunction.run = _timed_run
    foxacp.set_value_checks(False)
    for H, D, T in ((12, 64, 4096), (24, 64, 4096)):
        leaves, do = run_acp.inputs(H, D, T)
        for eps in (None, -10.0):
            for mode, fn in run_acp.steps(leaves, do, D, eps).items():
                host, gpu, launches = host_per_call(fn, leaves)
                tri = sum(launches.values())
                cells = " ".join(f"{k.removesuffix('_kernel')} {v:.3f}" for k, v in launches.items())
                print(f"{H}x{D} {T} eps={eps} {mode:6s}: host {host:.3f} ms/call (triton {tri:.3f}), gpu {gpu:.3f} "
                      f"ms/call | {cells}", flush=True)  # fmt: skip
    JITFunction.run = _run
    from foxacp.ops import attention, triton_op

    wrap(attention, "check_inputs", "check_inputs")
    wrap(attention, "_plan", "_plan")
    wrap(triton_op, "_forward", "_forward")
    wrap(triton_op, "_backward", "_backward")
    wrap(triton_op, "_qc_table", "_qc_table")
    wrap(triton_op, "gate_grad", "gate_grad")
    wrap(triton_op, "_desc", "_desc")
    wrap(triton_op, "_heads", "_heads")
    wrap(triton_op._TritonForgettingAttention, "backward", "Function.backward")
    for H, D, T in ((12, 64, 4096), (24, 64, 4096)):
        leaves, do = run_acp.inputs(H, D, T)
        for eps in (None, -10.0):
            print(f"breakdown {H}x{D} {T} eps={eps}: {breakdown(leaves, do, D, eps)}", flush=True)
    x = torch.zeros(1024, 64, device="cuda", dtype=torch.bfloat16)
    micro("triton launch, 2 args", lambda: _few[(1,)](x, 5))
    micro("triton launch, 31 args", lambda: _many[(1,)](x, *range(1, 31), B=1, C=2, D=3))
    descs = [TensorDescriptor(x, [1024, 64], [64, 1], [64, 64]) for _ in range(3)]
    micro("triton launch, 3 descriptors (prebuilt)", lambda: _desc[(1,)](*descs, x))
    micro(
        "triton launch, 3 descriptors (built)",
        lambda: _desc[(1,)](*[TensorDescriptor(x, [1024, 64], [64, 1], [64, 64]) for _ in range(3)], x),
    )
    micro("torch.cuda.get_device_capability", lambda: torch.cuda.get_device_capability(x.device))
    micro("torch.empty", lambda: torch.empty(24, 32768, device="cuda"))
    micro("torch elementwise (x * 2)", lambda: x * 2)


if __name__ == "__main__":
    main()
