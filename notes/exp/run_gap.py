"""One device call: how much of a short call's time is the host's (notes/kernels.md #35).

Per shape (4k), exact and ACP, fwd and fwd+bwd:
  eager  - do_bench median of the op as users call it;
  graph  - do_bench median of the same call captured in a CUDA graph (no host work between kernels, the
           same kernels and the same L2 flush before each call): the time if the host cost nothing;
  kernels- the sum of the kernels' device times (torch.profiler, mean of 5 calls).
Then, for one ACP forward after a sync, when each Triton launch starts and ends after the call starts
(median of 50 calls, us), and a launch of the forward kernel through the JIT against its compiled kernel.

    PYTHONPATH=src:notes/exp python notes/exp/run_gap.py

run34 ran this at b8e4663 with a mode "ab" (the direct launch of ops/launch.py, since removed, off and on).
run33 (at 78a0306) timed the eager rows without clearing the grads: its fwd+bwd rows include 4 accumulation
kernels (~0.23 ms at 24x64) that the graph rows do not.
"""

from __future__ import annotations

import inspect
import statistics
import time

import run_acp
import torch
import triton
from triton.runtime.jit import JITFunction

import foxacp
from foxacp.ops import triton_kernels as kern


def graphed(fn, leaves):
    """fn captured in a CUDA graph (after warm-up on a side stream); returns the replay."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            for t in leaves:
                t.grad = None
            fn()
    torch.cuda.current_stream().wait_stream(s)
    for t in leaves:
        t.grad = None
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def bench(fn, leaves=None) -> float:
    """do_bench median; with ``leaves``, their grads are cleared before each call (no accumulation kernels)."""
    fn()
    torch.cuda.synchronize()
    return float(triton.testing.do_bench(fn, warmup=25, rep=200, grad_to_none=leaves, return_mode="median"))


STAMPS: list[tuple[str, float, float]] = []
_run = JITFunction.run


def _stamped(self, *args, **kwargs):
    t0 = time.perf_counter()
    try:
        return _run(self, *args, **kwargs)
    finally:
        STAMPS.append((self.fn.__name__, t0, time.perf_counter()))


def timeline(f, n: int = 50) -> str:
    """Median start/end (us after the call starts) of each Triton launch in one call of f."""
    JITFunction.run = _stamped
    rows: dict[str, list[tuple[float, float]]] = {}
    ends = []
    for _ in range(n):
        torch.cuda.synchronize()
        STAMPS.clear()
        t = time.perf_counter()
        f()
        ends.append((time.perf_counter() - t) * 1e6)
        for name, a, b in STAMPS:
            rows.setdefault(name, []).append(((a - t) * 1e6, (b - t) * 1e6))
    JITFunction.run = _run
    torch.cuda.synchronize()
    cells = [
        f"{k.removesuffix('_kernel')} {statistics.median(a for a, _ in v):.0f}-{statistics.median(b for _, b in v):.0f}"
        for k, v in rows.items()
    ]
    return " | ".join(cells) + f" | return {statistics.median(ends):.0f}"


def direct_launch(f) -> str:
    """us per launch of fwd_kernel: through JITFunction.run, and through its compiled kernel."""
    seen = {}

    def capture(self, *args, grid, warmup, **kwargs):
        kernel = _run(self, *args, grid=grid, warmup=warmup, **kwargs)
        if self is kern.fwd_kernel:
            seen.update(args=args, kwargs=kwargs, grid=grid, kernel=kernel)
        return kernel

    JITFunction.run = capture
    f()
    JITFunction.run = _run
    args, kwargs, grid, kernel = seen["args"], seen["kwargs"], seen["grid"], seen["kernel"]
    names = list(inspect.signature(kern.fwd_kernel.fn).parameters)
    bound = dict(zip(names, args, strict=False)) | {k: v for k, v in kwargs.items() if k in names}
    ordered = [bound[n] for n in names]
    runner = kernel[grid]
    out = []
    for label, call in (
        ("jit", lambda: kern.fwd_kernel[grid](*args, **kwargs)),
        ("compiled", lambda: runner(*ordered)),
    ):
        for _ in range(20):
            call()
        torch.cuda.synchronize()
        n = 300
        t = time.perf_counter()
        for _ in range(n):
            call()
        out.append(f"{label} {(time.perf_counter() - t) * 1e6 / n:.1f}")
        torch.cuda.synchronize()
    return "fwd_kernel launch us: " + ", ".join(out)


def main() -> None:
    foxacp.set_value_checks(False)
    for H, D, T in ((12, 64, 4096), (24, 64, 4096)):
        leaves, do = run_acp.inputs(H, D, T)
        for eps in (None, -10.0):
            for mode, fn in run_acp.steps(leaves, do, D, eps).items():
                eager = bench(fn, leaves)
                try:
                    graph = f"{bench(graphed(fn, leaves)):.3f}"
                except Exception as err:  # noqa: BLE001 - report and go on
                    graph = f"failed ({type(err).__name__}: {str(err)[:80]})"
                ks = sum(run_acp.kernel_times(fn, leaves).values())
                print(f"{H}x{D} {T} eps={eps} {mode:6s}: eager {eager:.3f} graph {graph} kernels {ks:.3f}", flush=True)
        f = run_acp.steps(leaves, do, D, -10.0)["fwd"]
        print(f"{H}x{D} {T} ACP fwd timeline: {timeline(f)}", flush=True)
        print(f"{H}x{D} {T} {direct_launch(f)}", flush=True)


if __name__ == "__main__":
    main()
