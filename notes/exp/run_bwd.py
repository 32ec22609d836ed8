"""One device call: backward block shapes for the table kernels (notes/kernels.md #25), float64 check first.

Each variant replaces the (9, 64) table's dK/dV or dQ blocks; fwd+bwd medians at 16k and 4k, exact and ACP.

    PYTHONPATH=src:notes/exp python notes/exp/run_bwd.py
"""

from __future__ import annotations

import dataclasses
import json

import run_fwd
import torch

import foxacp
from foxacp.bench.gates import GateProfile, synthetic_log_fgate
from foxacp.ops.config import Blocks

BASE = run_fwd.TABLE
VARIANTS = {  # around the table of notes #26 (dK/dV 64x64 at 3 stages, dQ at 3 stages)
    "table": BASE,
    "dkdv64x64s4": dataclasses.replace(BASE, dkdv=Blocks(64, 64, 4, 4, head_group=4)),
    "dkdv64x64s3g2": dataclasses.replace(BASE, dkdv=Blocks(64, 64, 4, 3, head_group=2)),
    "dkdv128x64s3": dataclasses.replace(BASE, dkdv=Blocks(128, 64, 4, 3, head_group=4)),
    "dkdv64x64s3w8": dataclasses.replace(BASE, dkdv=Blocks(64, 64, 8, 3, head_group=4)),
    "dq128x64s4": dataclasses.replace(BASE, dq=Blocks(128, 64, 4, 4, head_group=4)),
}


def main() -> None:
    foxacp.set_value_checks(False)
    rows = []
    for name, err in run_fwd.checked_configs(VARIANTS):
        for T in (16384, 4096):
            B, H, D = 32768 // T, 24, 64
            g = synthetic_log_fgate(B, T, H, GateProfile(), seed=1, device="cuda")
            q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
            leaves = [t.requires_grad_() for t in (q, k, v, g)]
            for eps in (None, -10.0):
                f = lambda: foxacp.forgetting_attention(*leaves, log_eps=eps, qk_bound=D**0.5)  # noqa: B023, E731
                rows.append((name, T, int(eps is not None), run_fwd.ms(lambda: f().backward(do), leaves), err))  # noqa: B023
                print(json.dumps(rows[-1]), flush=True)
    print("\nvariant          T    acp  fwd+bwd ms  err/tol")
    for name, T, acp, t, err in rows:
        print(f"{name:14s} {T:6d} {acp:3d} {t:10.3f}  {err:.2f}")


if __name__ == "__main__":
    main()
