# One device call: GPU tests of the op, decoding and the HF path (float64 references on the GPU), the kernels of one
# compiled decode step (fused projections), then the end-to-end decode benchmark with compiled blocks (760M, bf16).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
mkdir -p $OUT/d
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm --format=csv,noheader | tee $OUT/d/gpu.txt
timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops tests/infer tests/hf 2>&1 | tee $OUT/d/pytest_gpu.log | tail -15
timeout 100 python3 experiments/049-compiled-decode/profile_step.py 2>&1 | grep -v -i warn | tee $OUT/d/profile_step.log | tail -25
timeout ${E2E_S:-200} python3 -m foxacp.bench.decode --preset 760M --batch 1,16 --contexts 16384 --steps 64 --compile --out $OUT/d/e2e 2>&1 | grep -v -i warn | tail -14
cd $OUT && tar czf d.tar.gz d && rm -rf d
