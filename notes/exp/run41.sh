#!/usr/bin/env bash
# notes/kernels.md #41: forward blocks for short contexts. Each variant is checked against float64 on the GPU
# (run_short.py), then per-kernel profiler times (run_prof.py) of src and the variants at 24x64 4k and 8k.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src:notes/exp
V="cfg-fwd128x64w4s3r160 cfg-fwd128x64w4s2r168 cfg-fwd64x128w4s2r168 cfg-fwd128x128w8s2r168"
SHAPES=24x64x4096 MODE=fwd python3 notes/exp/run_short.py src $V 2>&1 | grep -v -i warn | grep -v "^prof"
SHAPES=24x64x4096,24x64x8192 python3 notes/exp/run_prof.py fwd41 src $V 2>&1 | grep -v -i warn
