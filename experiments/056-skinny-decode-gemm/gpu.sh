# One device call (~10 min): the few-row GEMM against float64 on the GPU (its tests and the fused decode tests),
# the GEMM benchmark against cuBLAS, then decoding end to end (760M, 16k, compiled, the default path now runs the
# kernel) to compare with results/2026-12-04-20966ce-decode-e2e-fused-16k-h200. Results in $OUT/s.tar.gz.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
mkdir -p $OUT/s
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/ops/test_skinny.py tests/model/test_fused.py \
  2>&1 | tee $OUT/s/pytest_gpu.log | tail -4
timeout 120 python3 experiments/056-skinny-decode-gemm/bench.py --out $OUT/s 2>&1 | grep -v -i warn | tail -16
# The same rows with every GEMM on cuBLAS (the baseline, on this device), then with the kernel (the default).
timeout 150 python3 experiments/056-skinny-decode-gemm/no_skinny.py --preset 760M --batch 1,16 --contexts 16384 \
  --steps 64 --compile --no-graphs --tag cublas --out $OUT/s/decode-cublas 2>&1 | grep -v -i warn | tail -8
timeout 150 python3 -m foxacp.bench.decode --preset 760M --batch 1,16 --contexts 16384 --steps 64 --compile \
  --no-graphs --out $OUT/s/decode 2>&1 | grep -v -i warn | tail -12
# The kernels of one compiled step (B=1 after 4k) for comparison with 049's profile (473 kernels, 1568 us).
timeout 50 python3 experiments/049-compiled-decode/profile_step.py --preset 760M --context 4096 2>&1 \
  | grep -v -i warn | tee $OUT/s/profile_step.log | head -24
cd $OUT && tar czf s.tar.gz s && rm -rf s
