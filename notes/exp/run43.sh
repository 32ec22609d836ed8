#!/usr/bin/env bash
# notes/kernels.md #43: the forward issues the plan's load before it waits for the query block: 97c2407's tree
# (notes/exp/prev) against this one (ab_prof.sh), with the forward alone; then ncu's counters of the forward
# kernel (exact and ACP, 24x64 4k) for this tree.
SHAPES=24x64x4096,24x64x16384 FWD_SHAPES=24x64x4096 bash notes/exp/ab_prof.sh
PYTHONPATH=src:notes/exp timeout 240 ncu --clock-control none -k regex:fwd_kernel --launch-skip 2 --launch-count 2 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
  python3 notes/exp/run43_ncu.py > "$OUT/run43_ncu.txt" 2>&1
grep -E "fwd_kernel|Duration|Issue Slots Busy|Achieved Occupancy|Theoretical Occupancy|Warp Cycles Per Issued|Stall|No Eligible|Active Warps Per|Eligible Warps|SM Busy|Compute \(SM\) Throughput|Registers|Waves" "$OUT/run43_ncu.txt" | head -60
