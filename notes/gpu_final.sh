#!/usr/bin/env bash
# Final H100 calls for a commit. Stage "check": every kernel against float64 on the GPU (correctness grid,
# then the GPU tests, including a tensor beyond 2^31 elements) and the quick benchmark. Stage "full A"/"full B":
# the full benchmark split in two (24x64 + 12x128, then 12x64 + 16x64); "full": the head configs given, e.g.
# 24x64 with three timing rounds per row. Usage: notes/gpu_final.sh STAGE COMMIT [CONFIGS TAG]
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} PYTHONUNBUFFERED=1
stage=$1 commit=$2
bench() { python3 -m foxacp.bench.attention --out "$OUT" --commit "$commit" "$@" 2>&1 | grep -v "Warn\|warn\|bench:"; }
case $stage in
  check)
    python3 -m foxacp.bench.correctness --out "$OUT" | tail -3
    python3 -m pytest -q -m gpu tests/ops/test_gpu.py 2>&1 | tail -2
    bench --quick --tag final | tail -4 ;;
  fullA) bench --configs 24x64,12x128 --tag a --time-budget 500 | tail -4 ;;
  fullB) bench --configs 12x64,16x64 --tag b --time-budget 500 | tail -4 ;;
  full) bench --configs "$3" --tag "$4" --time-budget 540 | tail -4 ;;  # one part per call: full COMMIT CONFIGS TAG
esac
