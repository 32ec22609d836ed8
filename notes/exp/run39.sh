#!/usr/bin/env bash
# notes/kernels.md #39: ACP's own cost at the exact work (log_eps = -1e9 prunes nothing) per kernel, and dK/dV's
# diagonal loop bounded without Q_HI. On the GPU: the float64 grid and the GPU tests, then per-kernel profiler
# times of the previous tree (notes/exp/prev: `git archive 1d93fe5 src`) and this one in alternating processes.
set -u
export PYTHONUNBUFFERED=1
PYTHONPATH=src python3 -m foxacp.bench.correctness --out "$OUT" 2>&1 | tail -2
PYTHONPATH=src python3 -m pytest -q -m gpu tests/ops/test_gpu.py 2>&1 | tail -1
for r in 0 1; do
  for tree in notes/exp/prev .; do
    name=$([ "$tree" = . ] && echo new || echo old)
    EPS=none,-10,-1e9 SHAPES=24x64x4096,24x64x16384 PYTHONPATH=$tree/src:notes/exp \
      python3 notes/exp/run_prof.py "$name$r" src 2>&1 | grep -v -i warn
  done
done
