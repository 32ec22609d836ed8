#!/usr/bin/env bash
# One device call: float64 checks of the new kernels, GPU tests, then 2 interleaved A/B rounds against the
# previous kernels (a copy of 45105ce's src in .ab/old, carried), table last. Stops at the first failed check.
set -u -o pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/exp_out}
d=experiments/045-exact-decay-tables
PYTHONPATH=src python3 $d/run.py check 2>&1 | grep -v -i warn > $OUT/check.log || { tail -30 $OUT/check.log; exit 1; }
tail -16 $OUT/check.log
PYTHONPATH=src python3 -m pytest -q -m gpu tests/ops 2>&1 | tail -4 | tee $OUT/pytest_gpu.log
for r in 0 1; do
  PYTHONPATH=src python3 $d/run.py time new $r 2>&1 | grep -v -i warn
  PYTHONPATH=.ab/old/src python3 $d/run.py time old $r 2>&1 | grep -v -i warn
done
PYTHONPATH=src python3 $d/run.py table $OUT/ab.jsonl | tee $OUT/ab_table.txt
