"""One device call: head groups per kernel and context (notes/kernels.md #32).

Every kernel's ``head_group`` is set to G and used as it is (the L2 rule of ``config.head_group``, which
came from this sweep, is bypassed; the grid only changes, nothing recompiles), and each kernel's device time is
read from the profiler (mean of 5 calls), exact and ACP, in interleaved rounds: per-kernel profiler times moved
by under 1% between rounds where do_bench medians of the whole call moved by up to 8% (run24). Shapes are
HxDxT, fwd+bwd up to 16k and the forward alone beyond (as the benchmark).

    PYTHONPATH=src:notes/exp python notes/exp/run_groups.py [G ...]      (env SHAPES=24x64x4096,...)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import run_acp
import run_fwd

import foxacp
from foxacp.ops import config, triton_op

OUT = Path(os.environ.get("OUT", "/tmp/exp_out"))
SHAPES = [(24, 64, 4096), (24, 64, 8192), (24, 64, 16384), (24, 64, 32768), (24, 64, 65536), (12, 128, 4096),
          (12, 128, 16384), (12, 64, 4096)]  # fmt: skip
if os.environ.get("SHAPES"):
    SHAPES = [tuple(int(x) for x in sh.split("x")) for sh in os.environ["SHAPES"].split(",")]
KERNELS = ("fwd_kernel", "dq_kernel", "dkdv_kernel")


def with_groups(key: tuple[int, int], table: config.KernelConfig, g: int) -> None:
    blocks = {n: dataclasses.replace(getattr(table, n), head_group=g) for n in ("fwd", "dq", "dkdv")}
    config._TABLE[key] = dataclasses.replace(table, **blocks)


def mean(rows: list[dict], key: tuple, kernel: str) -> float:
    vals = [r[kernel] for r in rows if (r["H"], r["D"], r["T"], r["G"], r["acp"]) == key]
    return sum(vals) / max(len(vals), 1)


def main() -> None:
    triton_op.head_group = lambda blocks, *args: blocks.head_group  # G as given, not capped by the L2 rule
    OUT.mkdir(parents=True, exist_ok=True)
    foxacp.set_value_checks(False)
    groups = [int(g) for g in sys.argv[1:]] or [1, 2, 4, 8, 16, 32]
    tables = {d: config._TABLE[(9, d)] for d in (64, 128)}
    print(f"worst error / tol {run_fwd.worst_error():.2f}", flush=True)
    rows = []
    for H, D, T in SHAPES:
        leaves, do = run_acp.inputs(H, D, T)
        mode = "fwdbwd" if T <= 16384 else "fwd"
        for rnd in range(2):
            for g in groups:
                with_groups((9, D), tables[D], g)
                for eps in (None, -10.0):
                    kt = run_acp.kernel_times(run_acp.steps(leaves, do, D, eps)[mode], leaves)
                    rows.append(dict(H=H, D=D, T=T, G=g, round=rnd, acp=eps is not None,
                                     **{k: kt.get(k, 0.0) for k in KERNELS}))  # fmt: skip
                    print(json.dumps(rows[-1]), flush=True)
        for D_, t in tables.items():
            config._TABLE[(9, D_)] = t
    with (OUT / "groups.jsonl").open("w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    print("\nkernel ms (mean of the rounds), exact / ACP, per head group")
    for H, D, T in SHAPES:
        for k in KERNELS:
            cells = []
            for g in groups:
                ex, ac = (mean(rows, (H, D, T, g, acp), k) for acp in (False, True))
                if ex > 0:
                    cells.append(f"G{g} {ex:6.3f}/{ac:6.3f}")
            if cells:
                print(f"{H}x{D} {T:6d} {k[:4]:4s}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
