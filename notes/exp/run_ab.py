"""A/B of two source trees, one process per tree and round (notes/kernels.md #34).

    PYTHONPATH=<tree>/src:notes/exp python notes/exp/run_ab.py NAME ROUND [CHECK]

Times fwd and fwd+bwd, exact and ACP (do_bench median), host ms to issue one fwd+bwd and GPU ms per call
(events over back-to-back calls), at the shapes below; CHECK=1 first checks the op against float64 on the GPU.
Appends JSON lines to $OUT/ab.jsonl; notes/exp/ab.sh alternates the trees.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import run_acp
import run_fwd
import run_host

import foxacp
from foxacp.ops.acp import make_plan

SHAPES = [(24, 64, 4096), (12, 64, 4096), (16, 64, 4096), (12, 128, 4096), (24, 64, 8192), (24, 64, 16384)]
OUT = Path(os.environ.get("OUT", "/tmp/exp_out"))


def main() -> None:
    name, rnd = sys.argv[1], int(sys.argv[2])
    foxacp.set_value_checks(False)
    if len(sys.argv) > 3:
        print(f"{name}: worst error / tol {run_fwd.worst_error():.2f}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    for H, D, T in SHAPES:
        leaves, do = run_acp.inputs(H, D, T)
        saving = make_plan(*leaves[:2], leaves[3], log_eps=-10.0, qk_bound=D**0.5).stats.flop_saving
        row = dict(tree=name, round=rnd, H=H, D=D, T=T, saving=saving)
        for eps in (None, -10.0):
            tag = "exact" if eps is None else "acp"
            steps = run_acp.steps(leaves, do, D, eps)
            for mode in ("fwd", "fwdbwd"):
                row[f"{tag}_{mode}"] = run_fwd.ms(steps[mode], leaves if mode == "fwdbwd" else None)
            host, gpu, _ = run_host.host_per_call(steps["fwdbwd"], leaves)
            row[f"{tag}_host"], row[f"{tag}_gpu"] = host, gpu
        for mode in ("fwd", "fwdbwd"):
            row[f"bound_{mode}"] = row[f"acp_{mode}"] / (1.15 * (1 - saving) * row[f"exact_{mode}"])
        row["bound_gpu"] = row["acp_gpu"] / (1.15 * (1 - saving) * row["exact_gpu"])
        print(json.dumps(row), flush=True)
        with (OUT / "ab.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
