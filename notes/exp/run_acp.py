"""One device call: where the ACP time goes at short contexts (notes/kernels.md #28).

1. Per-kernel device time (torch.profiler, mean of 5 steps) of fwd and fwd+bwd, exact and ACP, with the
   do_bench median beside it (a median well above the kernels' sum means the host is the limit).
2. ACP-only block variants (the table's blocks replaced for the ACP run), each checked against float64 first.

    PYTHONPATH=src:notes/exp python notes/exp/run_acp.py [profile] [variants]
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
from foxacp.ops import config
from foxacp.ops.config import Blocks

OUT = Path(os.environ.get("OUT", "/tmp/exp_out"))
BASE = run_fwd.TABLE
VARIANTS = {
    "table": BASE,
    "fwd128x64r160": dataclasses.replace(BASE, fwd=Blocks(128, 64, 4, 3, head_group=16, maxnreg=160)),
    "fwdg4": dataclasses.replace(BASE, fwd=dataclasses.replace(BASE.fwd, head_group=4)),
    "dkdv64x64s2": dataclasses.replace(BASE, dkdv=Blocks(64, 64, 4, 2, head_group=4)),
    "dkdv32x64s3": dataclasses.replace(BASE, dkdv=Blocks(32, 64, 4, 3, head_group=4)),
    "dkdvg1": dataclasses.replace(BASE, dkdv=Blocks(64, 64, 4, 3, head_group=1)),
    "dq64x64s3": dataclasses.replace(BASE, dq=Blocks(64, 64, 4, 3, head_group=4)),
    "dq128x64s2": dataclasses.replace(BASE, dq=Blocks(128, 64, 4, 2, head_group=4)),
}


def inputs(H: int, D: int, T: int):
    B = 32768 // T
    g = synthetic_log_fgate(B, T, H, GateProfile(), seed=1, device="cuda")
    q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    return [t.requires_grad_() for t in (q, k, v, g)], do


def steps(leaves, do, D: int, eps):
    f = lambda: foxacp.forgetting_attention(*leaves, log_eps=eps, qk_bound=D**0.5)  # noqa: E731

    def fwd():
        with torch.no_grad():
            f()

    return {"fwd": fwd, "fwdbwd": lambda: f().backward(do)}


def kernel_times(fn, leaves, n: int = 5) -> dict[str, float]:
    """Mean device ms per call of each kernel (leaves' grads cleared: no accumulation kernels)."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
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
    for name, cfg in VARIANTS.items():
        config._TABLE[run_fwd.KEY] = cfg
        try:
            err = run_fwd.worst_error()
        except Exception as e:  # a shape that fails to compile or run: report and go on
            print(name, "failed:", str(e).splitlines()[-1][:200], flush=True)
            continue
        for T in (4096, 8192):
            leaves, do = inputs(24, 64, T)
            for mode, fn in steps(leaves, do, 64, -10.0).items():
                rows.append((name, T, mode, run_fwd.ms(fn, leaves), err))
                print(json.dumps(rows[-1]), flush=True)
                with (OUT / "acp_variants.jsonl").open("a") as fh:
                    fh.write(json.dumps(rows[-1]) + "\n")
    config._TABLE[run_fwd.KEY] = BASE
    print("\nvariant          T    mode    acp ms  err/tol")
    for name, T, mode, t, err in rows:
        print(f"{name:15s} {T:6d} {mode:7s} {t:7.3f}  {err:.2f}")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    foxacp.set_value_checks(False)
    parts = sys.argv[1:] or ["profile", "variants"]
    if "profile" in parts:
        run_profile()
    if "variants" in parts:
        run_variants()


if __name__ == "__main__":
    main()
