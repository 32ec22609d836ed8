#!/usr/bin/env bash
# notes/kernels.md #42: the forward's query block through the copy engine (a tensor descriptor) instead of
# pointer loads. On the GPU: the float64 grid and GPU tests, then per-kernel profiler times of the previous tree
# (notes/exp/prev: `git archive 68ae71f src`) and this one in alternating processes, and the forward alone
# (run_short.py MODE=fwd: do_bench, two rounds) for each.
set -u
export PYTHONUNBUFFERED=1
PYTHONPATH=src python3 -m foxacp.bench.correctness --out "$OUT" 2>&1 | tail -2
PYTHONPATH=src python3 -m pytest -q -m gpu tests/ops/test_gpu.py 2>&1 | tail -1
for r in 0 1; do
  for tree in notes/exp/prev .; do
    name=$([ "$tree" = . ] && echo new || echo old)
    SHAPES=24x64x4096,24x64x16384 PYTHONPATH=$tree/src:notes/exp python3 notes/exp/run_prof.py "$name$r" src 2>&1 \
      | grep -v -i warn
    SHAPES=24x64x4096 MODE=fwd PYTHONPATH=$tree/src:notes/exp python3 notes/exp/run_short.py src 2>&1 \
      | grep "^src " | sed "s/^/$name$r /"
  done
done
