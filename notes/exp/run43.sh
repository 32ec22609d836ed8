#!/usr/bin/env bash
# notes/kernels.md #43: the forward issues the plan's load before it waits for the query block. On the GPU: the
# float64 grid and GPU tests, then per-kernel profiler times of the previous tree (notes/exp/prev: `git archive
# 97c2407 src`) and this one in alternating processes, the forward alone by do_bench, and ncu's counters of the
# forward kernel (exact and ACP, 24x64 4k) for this tree.
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
PYTHONPATH=src:notes/exp timeout 240 ncu --clock-control none -k regex:fwd_kernel --launch-skip 2 --launch-count 2 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
  python3 notes/exp/run43_ncu.py > "$OUT/run43_ncu.txt" 2>&1
grep -E "fwd_kernel|Duration|Issue Slots Busy|Achieved Occupancy|Theoretical Occupancy|Warp Cycles Per Issued|Stall|No Eligible|Active Warps Per|Eligible Warps|SM Busy|Compute \(SM\) Throughput|Registers|Waves" "$OUT/run43_ncu.txt" | head -60
