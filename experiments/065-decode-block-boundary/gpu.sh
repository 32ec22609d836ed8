# One device call (~5 min): the decode GPU tests (float64 checks of the kernels, the compiled step and its CUDA
# graph) on the deferred residual add, then compare.py at B=1 after 16k, then 064's launch-shape sweep. $OUT/e.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/e
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_decode_gpu.py tests/infer/test_gpu.py \
  tests/model/test_fused.py 2>&1 | tail -4 | tee $OUT/e/pytest_gpu.log
timeout 150 python3 experiments/065-decode-block-boundary/compare.py --context 16384 2>&1 | grep -v -i warn \
  | tee $OUT/e/compare-16k.log | tail -7
bash experiments/064-decode-b1-breakdown/gpu.sh
