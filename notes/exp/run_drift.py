"""One device call: does a row get slower the more often it runs in one process? (notes/kernels.md #33)

The full benchmark at 300d4f1 timed foxacp-acp fwd+bwd at 16k 5-7% slower in each of its three rounds
(6.34, 6.78, 7.08 ms at 24x64) while every other row held within 2%. Here exact and ACP alternate, eight
times each: the do_bench median, the host's time to enqueue one call (no sync), and the memory in use.

    PYTHONPATH=src:notes/exp python notes/exp/run_drift.py          (env SHAPES=24x64x16384,...)
"""

from __future__ import annotations

import os
import time

import run_acp
import run_fwd
import torch

import foxacp

SHAPES = [tuple(int(x) for x in sh.split("x")) for sh in os.environ.get("SHAPES", "24x64x16384").split(",")]


def host_ms(fn, leaves, n: int = 10) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        for t in leaves:
            t.grad = None
        fn()
    host = (time.perf_counter() - start) / n * 1e3
    torch.cuda.synchronize()
    return host


def main() -> None:
    foxacp.set_value_checks(False)
    for H, D, T in SHAPES:
        leaves, do = run_acp.inputs(H, D, T)
        fns = {eps: run_acp.steps(leaves, do, D, eps)["fwdbwd"] for eps in (None, -10.0)}
        for rnd in range(8):
            for eps, fn in fns.items():
                ms = run_fwd.ms(fn, leaves)
                host = host_ms(fn, leaves)
                mem = torch.cuda.memory_allocated() / 2**20
                name = "exact" if eps is None else "acp"
                print(f"{H}x{D} {T} round {rnd} {name:5s} do_bench {ms:7.3f} ms  host/call {host:6.3f} ms  "
                      f"allocated {mem:8.1f} MiB", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
