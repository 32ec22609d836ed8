#!/usr/bin/env bash
# Device call for notes #27: float64 checks of src (correctness grid, GPU tests), then run_loop.py.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:$PWD/notes/exp:/tmp/site:${PYTHONPATH:-} PYTHONUNBUFFERED=1
[ -n "${CHECK:-}" ] && python3 -m foxacp.bench.correctness --out "$OUT" | tail -3
[ -n "${CHECK:-}" ] && python3 -m pytest -q -m gpu tests/ops/test_gpu.py 2>&1 | tail -2
python3 notes/exp/run_loop.py "$@" 2>&1 | grep -v "Warn\|warn" | tee "$OUT/loop.log" | tail -40
