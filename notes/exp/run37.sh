#!/usr/bin/env bash
# notes/kernels.md #37: dQ blocks with more programs per multiprocessor (run_short.py CONFIGS cfg-dq*): each checked
# against float64 on the GPU, then per-kernel profiler times (run_prof.py) against the table's dQ (src).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src:notes/exp
V="cfg-dq64w4s2r168 cfg-dq64w4s3r168 cfg-dq64w4s2r128 cfg-dq128w8s3r128 cfg-dq128w8s2r128"
python3 - $V <<'PY' 2>&1 | grep -v -i warn
import sys, run_fwd, run_short
for name, err in run_fwd.checked_configs({v: run_short.CONFIGS[v] for v in sys.argv[1:]}):
    print(f"check {name}: worst error / tol {err:.3f}", flush=True)
PY
python3 notes/exp/run_prof.py dq src $V 2>&1 | grep -v -i warn
