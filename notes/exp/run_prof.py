"""Per-kernel device ms per fwd+bwd call (profiler) of the op on PYTHONPATH, exact and ACP (notes/kernels.md #34).

    run_prof.py NAME [VARIANT ...]   (VARIANT: a run_short.py name, e.g. src or cfg-dkdv168s2)

Lines: prof NAME/VARIANT HxD T eps: total | kernel ms ...; SHAPES=HxDxT,... replaces the shapes, EPS=none,-10,...
the log_eps values (a very negative one prunes nothing: ACP's own cost at the exact work).
"""

import os
import sys

import run_acp
import run_short

import foxacp

SHAPES = [(24, 64, 4096), (24, 64, 8192), (24, 64, 16384), (12, 64, 4096)]
if os.environ.get("SHAPES"):
    SHAPES = [tuple(int(x) for x in sh.split("x")) for sh in os.environ["SHAPES"].split(",")]

EPS = [None if e == "none" else float(e) for e in os.environ.get("EPS", "none,-10").split(",")]

foxacp.set_value_checks(False)
variants = sys.argv[2:] or ["src"]
for H, D, T in SHAPES:
    leaves, do = run_acp.inputs(H, D, T)
    for rnd in range(2):
        for variant in variants:
            run_short.use(variant)
            for eps in EPS:
                kt = run_acp.kernel_times(run_acp.steps(leaves, do, D, eps)["fwdbwd"], leaves)
                cells = "  ".join(
                    f"{k.removesuffix('_kernel')[:9]} {v:.3f}" for k, v in sorted(kt.items()) if v > 0.002
                )
                print(f"prof {sys.argv[1]}/{variant:14s} {H}x{D} {T:6d} r{rnd} eps={eps}: total {sum(kt.values()):.3f} "
                      f"| {cells}", flush=True)  # fmt: skip
