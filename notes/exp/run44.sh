#!/usr/bin/env bash
# notes/kernels.md #44: the forward's epilogue divides once per row (acc * (1 / l)) instead of once per element
# (with #43's reordered prologue). On the GPU: the float64 grid and GPU tests, then per-kernel profiler times of
# 97c2407's tree (notes/exp/prev: `git archive 97c2407 src`) and this one in alternating processes, and the
# forward alone by do_bench. Log: $OUT/run44.txt.
set -u
export PYTHONUNBUFFERED=1
{
PYTHONPATH=src python3 -m foxacp.bench.correctness --out "$OUT" 2>&1 | tail -2
PYTHONPATH=src python3 -m pytest -q -m gpu tests/ops/test_gpu.py 2>&1 | tail -1
for r in 0 1; do
  for tree in notes/exp/prev .; do
    name=$([ "$tree" = . ] && echo new || echo old)
    SHAPES=24x64x4096,24x64x16384 PYTHONPATH=$tree/src:notes/exp python3 notes/exp/run_prof.py "$name$r" src 2>&1 \
      | grep -v -i warn
    SHAPES=24x64x4096,24x64x8192 MODE=fwd PYTHONPATH=$tree/src:notes/exp python3 notes/exp/run_short.py src 2>&1 \
      | grep "^src " | sed "s/^/$name$r /"
  done
done
} 2>&1 | tee "$OUT/run44.txt"
