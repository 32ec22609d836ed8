#!/usr/bin/env bash
# A/B of two source trees by kernel times (notes/kernels.md #39-#44): the float64 grid and the GPU tests on this
# tree, then two alternations of the previous tree (notes/exp/prev: `git archive REV src | tar -x -C
# notes/exp/prev`) and this one, each in its own process: per-kernel profiler times (run_prof.py; SHAPES, and EPS
# when set) and, with FWD_SHAPES set, the forward alone by do_bench (run_short.py MODE=fwd).
#     SHAPES=24x64x4096 [EPS=none,-10] [FWD_SHAPES=24x64x4096] bash notes/exp/ab_prof.sh
set -u
export PYTHONUNBUFFERED=1
PYTHONPATH=src python3 -m foxacp.bench.correctness --out "$OUT" 2>&1 | tail -2
PYTHONPATH=src python3 -m pytest -q -m gpu tests/ops/test_gpu.py 2>&1 | tail -1
for r in 0 1; do
  for tree in notes/exp/prev .; do
    name=$([ "$tree" = . ] && echo new || echo old)
    PYTHONPATH=$tree/src:notes/exp python3 notes/exp/run_prof.py "$name$r" src 2>&1 | grep -v -i warn
    if [ -n "${FWD_SHAPES:-}" ]; then
      SHAPES=$FWD_SHAPES MODE=fwd PYTHONPATH=$tree/src:notes/exp python3 notes/exp/run_short.py src 2>&1 \
        | grep "^src " | sed "s/^/$name$r /"
    fi
  done
done
