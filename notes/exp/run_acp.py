"""One device call: where the ACP time goes at short contexts (notes/kernels.md #28-#30).

Modes (any of them, in order; default profile and variants):
  profile  - per-kernel device time (torch.profiler, mean of 5 steps) of fwd and fwd+bwd, exact and ACP, with
             the do_bench median beside it (a median well above the kernels' sum means the host is the limit);
  variants - ACP-only block variants (the table's blocks replaced for the ACP run), checked against float64;
  windows  - every head at one window W: kernel time against loop iterations (the per-program cost, #29);
  host     - host time per call and a cProfile of the ACP fwd+bwd at 12x64, 4k.
The persistent-kernel comparison of #29 ran here as mode "persist": ``git show 38bd1ef:notes/exp/run_acp.py``;
run12's ACP-only variants (#29) are in ``git show 3516f1f:notes/exp/run_acp.py``, the ones here are #31's.

    PYTHONPATH=src:notes/exp python notes/exp/run_acp.py [profile] [variants] [windows] [host]
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import sys
from pathlib import Path

import run_fwd
import torch
from torch.profiler import ProfilerActivity, profile

import foxacp
from foxacp.bench.gates import GateProfile, synthetic_log_fgate
from foxacp.ops.config import Blocks

OUT = Path(os.environ.get("OUT", "/tmp/exp_out"))
BASE = run_fwd.TABLE
VARIANTS = {
    "table": BASE,
    # #31: fewer dK/dV programs (two warpgroups share each query block); dK/dV's key block must divide dQ's
    "dkdv64x128w8+dq128x128w8": dataclasses.replace(
        BASE, dkdv=Blocks(64, 128, 8, 3, head_group=4), dq=Blocks(128, 128, 8, 3, head_group=4)
    ),
    "dkdv64x128w8s2+dq128x128w8": dataclasses.replace(
        BASE, dkdv=Blocks(64, 128, 8, 2, head_group=4), dq=Blocks(128, 128, 8, 3, head_group=4)
    ),
    "dq128x128w8": dataclasses.replace(BASE, dq=Blocks(128, 128, 8, 3, head_group=4)),
}


def inputs(H: int, D: int, T: int):
    B = max(1, 32768 // T)
    g = synthetic_log_fgate(B, T, H, GateProfile(), seed=1, device="cuda")
    q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    return [t.requires_grad_() for t in (q, k, v, g)], do


def steps(leaves, do, D: int, eps):
    f = lambda: foxacp.forgetting_attention(*leaves, log_eps=eps, qk_bound=D**0.5)  # noqa: E731

    def fwd():
        with torch.no_grad():
            f()

    return {"fwd": fwd, "fwdbwd": lambda: f().backward(do)}


def kernel_times(fn, leaves, n: int = 5, flush: torch.Tensor | None = None) -> dict[str, float]:
    """Mean device ms per call of each kernel (leaves' grads cleared: no accumulation kernels); with ``flush``,
    that buffer is zeroed before every call, an L2 flush as do_bench does (its own kernel is in the result)."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            if flush is not None:
                flush.zero_()
            for t in leaves:
                t.grad = None
            fn()
        torch.cuda.synchronize()
    out: dict[str, float] = collections.defaultdict(float)
    for e in prof.key_averages():
        if e.device_time_total > 0:
            name = e.key if e.key.endswith("_kernel") else e.key.split("<")[0].split("(")[0][-40:]
            out[name] += e.device_time_total / 1e3 / n
    return dict(out)


def run_profile() -> None:
    print("== per-kernel device ms per call (profiler, 5 calls) and do_bench median", flush=True)
    for H, D, T in ((24, 64, 4096), (24, 64, 8192), (24, 64, 16384), (12, 64, 4096)):
        leaves, do = inputs(H, D, T)
        for mode in ("fwd", "fwdbwd"):
            res = {}
            for eps in (None, -10.0):
                fn = steps(leaves, do, D, eps)[mode]
                med = run_fwd.ms(fn, leaves)
                res[eps] = (med, kernel_times(fn, leaves))
            (m_ex, k_ex), (m_acp, k_acp) = res[None], res[-10.0]
            print(
                f"-- {H}x{D} T={T} {mode}: do_bench exact {m_ex:.3f} acp {m_acp:.3f} | kernel sums "
                f"{sum(k_ex.values()):.3f} / {sum(k_acp.values()):.3f}",
                flush=True,
            )
            for name in sorted(set(k_ex) | set(k_acp), key=lambda n: -k_ex.get(n, k_acp.get(n, 0))):
                a, b = k_ex.get(name, 0.0), k_acp.get(name, 0.0)
                print(f"   {name:42s} {a:8.4f} {b:8.4f}  {b / a if a else float('nan'):6.3f}", flush=True)
            with (OUT / "acp_profile.jsonl").open("a") as fh:
                fh.write(
                    json.dumps(dict(H=H, D=D, T=T, mode=mode, exact_ms=m_ex, acp_ms=m_acp, exact=k_ex, acp=k_acp))
                    + "\n"
                )


def run_variants() -> None:
    foxacp.set_value_checks(False)
    rows = []
    for name, err in run_fwd.checked_configs(VARIANTS):
        for T in (4096, 8192):
            leaves, do = inputs(24, 64, T)
            for mode, fn in steps(leaves, do, 64, -10.0).items():
                rows.append((name, T, mode, run_fwd.ms(fn, leaves), err))
                print(json.dumps(rows[-1]), flush=True)
                with (OUT / "acp_variants.jsonl").open("a") as fh:
                    fh.write(json.dumps(rows[-1]) + "\n")
    print("\nvariant          T    mode    acp ms  err/tol")
    for name, T, mode, t, err in rows:
        print(f"{name:15s} {T:6d} {mode:7s} {t:7.3f}  {err:.2f}")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    foxacp.set_value_checks(False)
    parts = sys.argv[1:] or ["profile", "variants"]
    for part in parts:
        {
            "profile": run_profile,
            "variants": run_variants,
            "windows": run_windows,
            "host": run_host,
        }[part]()


def iterations(plan, T: int) -> dict[str, int]:
    """Loop iterations of each kernel (24x64 table blocks, one uniform batch) under ``plan`` (None: exact)."""
    tiles = -(-T // 128)
    m = torch.arange(tiles, device="cuda")
    lo = plan.kv_lo.long() * 128 if plan is not None else torch.zeros_like(m)
    hi = torch.minimum((m + 1) * 128, torch.tensor(T, device="cuda"))
    fwd = ((hi - lo + 127) // 128).sum() * (1 if plan is not None else plan_batch(T) * 24)
    dq = ((hi - lo + 63) // 64).sum() * (1 if plan is not None else plan_batch(T) * 24)
    n0 = torch.arange(-(-T // 64), device="cuda") * 64
    q_end = plan.q_hi.long()[:, :, n0 // 128] * 128 if plan is not None else torch.full_like(n0, T)
    dkdv = ((torch.clamp(q_end, max=T) - n0) // 64).sum() * (1 if plan is not None else plan_batch(T) * 24)
    return {"fwd_kernel": int(fwd), "dq_kernel": int(dq), "dkdv_kernel": int(dkdv)}


def plan_batch(T: int) -> int:
    return 32768 // T


def run_windows() -> None:
    """Kernel time against loop iterations with every head at one window: fit time = a * programs + b * iters."""
    from foxacp.ops.acp import make_plan

    T, H, D = 4096, 24, 64
    B = plan_batch(T)
    print("== 24x64 T=4096, every head at window W: kernel ms, iterations (k), us per iteration", flush=True)
    for W in (16, 64, 256, 1024, 4096, None):
        prof = GateProfile(min_window=W or 16.0, max_window_factor=(W or 16.0) / T)
        g = synthetic_log_fgate(B, T, H, prof, seed=1, device="cuda")
        q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
        leaves = [t.requires_grad_() for t in (q, k, v, g)]
        eps = None if W is None else -10.0
        plan = None if W is None else make_plan(q, k, g, log_eps=eps, qk_bound=D**0.5)
        its = iterations(plan, T)
        kt = kernel_times(steps(leaves, do, D, eps)["fwdbwd"], leaves)
        cells = "  ".join(f"{n[:4]} {kt[n]:.3f} ms {its[n] / 1e3:7.1f}k {kt[n] * 1e3 / its[n] * 264:5.2f}" for n in its)
        print(f"W={W}: {cells}", flush=True)
        with (OUT / "acp_windows.jsonl").open("a") as fh:
            fh.write(json.dumps(dict(W=W, iters=its, ms={n: kt[n] for n in its})) + "\n")


def run_host() -> None:
    """Host time per call (20 calls, one sync) and a cProfile of the ACP fwd+bwd at 12x64, 4k."""
    import cProfile
    import pstats
    import time

    leaves, do = inputs(12, 64, 4096)
    for eps in (None, -10.0):
        for mode, fn in steps(leaves, do, 64, eps).items():
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(20):
                fn()
            t1 = time.perf_counter()
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            print(
                f"host 12x64 4k eps={eps} {mode}: issue {(t1 - t0) / 20 * 1e3:.3f} ms/call, "
                f"with sync {(t2 - t0) / 20 * 1e3:.3f}",
                flush=True,
            )
    fn = steps(leaves, do, 64, -10.0)["fwdbwd"]
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(20):
        fn()
    pr.disable()
    torch.cuda.synchronize()
    pstats.Stats(pr).sort_stats("tottime").print_stats(25)
    pstats.Stats(pr).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
