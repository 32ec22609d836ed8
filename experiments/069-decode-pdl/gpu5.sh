# One device call (~4 min, Hopper): our kernels' PDL paths against float64 (FOXACP_PDL=1: outside the compiled
# step they launch plainly by default), then the default (PDL in the compiled step's kernels, Inductor's and ours)
# through the code users run: the inference GPU tests, and 760M B=1 after 16k compiled + CUDA graph with the default
# and FOXACP_PDL=0.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/p5
FOXACP_PDL=1 timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_decode_gpu.py tests/ops/test_skinny.py \
  2>&1 | tail -2 | tee $OUT/p5/pytest_gpu_pdl.log
timeout 75 python3 -m pytest -q -p no:cacheprovider -m gpu tests/infer/test_gpu.py 2>&1 | tail -2 | tee $OUT/p5/pytest_gpu.log
for pdl in auto 0; do
  echo "== FOXACP_PDL=$pdl" | tee -a $OUT/p5/e2e.log
  FOXACP_PDL=$pdl timeout 45 python3 -m foxacp.bench.decode --preset 760M --batch 1 --contexts 16384 --steps 64 \
    --compile --no-graphs --tag pdl-$pdl --out /tmp/p5/$pdl 2>/dev/null | grep "compiled" | tee -a $OUT/p5/e2e.log
done
