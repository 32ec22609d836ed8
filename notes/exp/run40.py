"""One device call: why the exact 16k fwd+bwd toggles between ~15.6 and ~17.5 ms from one do_bench to the next
while cuDNN holds (run26, and the full runs' rounds; notes/kernels.md #40).

Each of N rounds shifts the caching allocator's state with a pad tensor of a different size, then times exact
fwd+bwd (do_bench median), cuDNN fwd+bwd, and per-kernel device times of 6 calls each after an L2 flush (as
do_bench does), and prints the grads' addresses and the clock/power the driver reports. Run with nvidia-smi
sampling in the background for the clocks during each measurement.

    PYTHONPATH=src:notes/exp python notes/exp/run40.py   (env SHAPE=24x64x16384, ROUNDS=12)
"""

from __future__ import annotations

import os
import time

import run_acp
import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

import foxacp

H, D, T = (int(x) for x in os.environ.get("SHAPE", "24x64x16384").split("x"))


def sensors() -> str:
    try:
        return f"sm {torch.cuda.clock_rate()} MHz, {torch.cuda.power_draw() / 1e3:.0f} W, {torch.cuda.temperature()} C"
    except Exception as e:  # noqa: BLE001 (pynvml missing: the nvidia-smi log has them)
        return f"sensors n/a ({type(e).__name__})"


def main() -> None:
    foxacp.set_value_checks(False)
    leaves, do = run_acp.inputs(H, D, T)
    steps = {eps: run_acp.steps(leaves, do, D, eps)["fwdbwd"] for eps in (None, -10.0)}
    qd, kd, vd, dod = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (*leaves[:3], do))

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            torch.nn.functional.scaled_dot_product_attention(qd, kd, vd, is_causal=True).backward(dod)

    flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
    pads = []
    for rnd in range(int(os.environ.get("ROUNDS", "12"))):
        pads.append(torch.empty((rnd * 7919 + 1) * 4096, dtype=torch.int8, device="cuda"))
        if rnd % 3 == 2:
            pads.pop(0)
        t0 = time.time()
        ex = triton.testing.do_bench(steps[None], grad_to_none=leaves, return_mode="median")
        t1 = time.time()
        cu = triton.testing.do_bench(cudnn, grad_to_none=[qd, kd, vd], return_mode="median")
        acp = triton.testing.do_bench(steps[-10.0], grad_to_none=leaves, return_mode="median")
        ptrs = " ".join(f"{t.grad.data_ptr() % 2**24:#x}" for t in leaves)
        kt = run_acp.kernel_times(steps[None], leaves, n=6, flush=flush)
        km = {k.removesuffix("_kernel"): v for k, v in kt.items() if k.endswith("_kernel")}
        ks = " ".join(f"{k} {v:.3f}" for k, v in sorted(km.items()) if v > 0.01)
        print(f"round {rnd:2d} t={t0:.2f}-{t1:.2f} exact {ex:7.3f} cudnn {cu:7.3f} acp {acp:6.3f} | kernels "
              f"{sum(km.values()):.3f}: {ks} | grads%16M {ptrs} | {sensors()}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
