#!/usr/bin/env bash
# notes/kernels.md #36: dK/dV in one loop (unmasked delta loads from a padded buffer) and dQ on uniform bounds,
# against the tree of 65006cc (notes/exp/prev, from `git archive 65006cc src`): the new tree checked against
# float64 on the GPU, then per-kernel profiler times (run_prof.py), trees alternated in processes.
set -u
export PYTHONUNBUFFERED=1
PYTHONPATH=src:notes/exp python3 -c "import run_fwd; print('new: worst error / tol', round(run_fwd.worst_error(), 3))" 2>&1 | grep -v -i warn
for r in 0 1; do
  for tree in notes/exp/prev .; do
    name=$([ "$tree" = . ] && echo new || echo old)
    PYTHONPATH=$tree/src:notes/exp python3 notes/exp/run_prof.py "$name$r" src 2>&1 | grep -v -i warn
  done
done
