"""Per-kernel device time of one forgetting-attention call (torch.profiler), exact and ACP, forward and
forward + backward: where a call's time goes, kernel by kernel (experiments 028-030 and 034-044 read it so).

    python experiments/028-fewer-launches-per-call/kernel_times.py [--shapes 24x64x4096,12x64x4096] [--eps none,-10]

Prints one line per (shape, mode, log_eps): the sum of the kernels' mean device ms per call, then each kernel
above 2 us. A sum well below the call's wall time means the host is the limit. On a machine without a GPU the
same table comes from the CPU profiler (interpreted kernels: a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Callable, Sequence

import torch
from torch.profiler import ProfilerActivity, profile

import foxacp
from foxacp.testing import make_inputs


def kernel_times(fn: Callable[[], object], leaves: Sequence[torch.Tensor], n: int = 5) -> dict[str, float]:
    """Mean ms per call of each kernel (device time on CUDA, CPU time otherwise) over ``n`` calls of ``fn``
    after one untimed call; the leaves' gradients are cleared before every call (no accumulation kernels)."""
    cuda = leaves[0].is_cuda
    fn()
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            for t in leaves:
                t.grad = None
            fn()
        if cuda:
            torch.cuda.synchronize()
    out: dict[str, float] = collections.defaultdict(float)
    for e in prof.key_averages():
        total = e.device_time_total if cuda else e.self_cpu_time_total
        if total > 0:
            out[e.key.split("<")[0].split("(")[0][-40:]] += total / 1e3 / n
    return dict(out)


def calls(leaves: list[torch.Tensor], do: torch.Tensor, eps: float | None) -> dict[str, Callable[[], object]]:
    """The forward alone and forward + backward of the op at ``eps`` (None: exact), q.k bound sqrt(D)."""
    bound = leaves[0].shape[-1] ** 0.5

    def fwd() -> None:
        with torch.no_grad():
            foxacp.forgetting_attention(*leaves, log_eps=eps, qk_bound=bound)

    def fwdbwd() -> None:
        foxacp.forgetting_attention(*leaves, log_eps=eps, qk_bound=bound).backward(do)

    return {"fwd": fwd, "fwdbwd": fwdbwd}


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Profile every shape; returns the printed rows (shape, mode, log_eps, per-kernel ms)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="24x64x4096,24x64x16384,12x64x4096", help="HEADSxDIMxT,...")
    p.add_argument("--eps", default="none,-10", help="log_eps values; none = exact")
    p.add_argument("--tokens", type=int, default=32768, help="tokens per batch (B = tokens // T)")
    p.add_argument("--calls", type=int, default=5, help="profiled calls per row")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    eps_list = [None if e == "none" else float(e) for e in args.eps.split(",")]
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    foxacp.set_value_checks(False)
    rows = []
    for shape in args.shapes.split(","):
        H, D, T = (int(x) for x in shape.split("x"))
        inputs = make_inputs(max(1, args.tokens // T), T, T, H, H, D, dtype=dtype, device=args.device, seed=1)
        leaves = [t.requires_grad_() for t in inputs]
        do = torch.randn_like(leaves[0])
        for mode in ("fwd", "fwdbwd"):
            for eps in eps_list:
                kt = kernel_times(calls(leaves, do, eps)[mode], leaves, args.calls)
                rows.append({"shape": shape, "mode": mode, "log_eps": eps, "kernels": kt})
                cells = "  ".join(f"{k[:24]} {v:.3f}" for k, v in sorted(kt.items(), key=lambda x: -x[1]) if v > 0.002)
                print(f"{shape} {mode:6s} eps={eps}: total {sum(kt.values()):.3f} | {cells}", flush=True)
    return rows


if __name__ == "__main__":
    main()
