# One device call (~7 min, Hopper): 067's GEMM chain with and without programmatic dependent launch, then the 760M
# decode step at B=1 and 16 after 16k end to end (compiled + CUDA graph, synthetic gates) three ways: as today,
# with PDL in the kernels Inductor writes (TORCHINDUCTOR_ENABLE_PDL=1), and in those and the few-row GEMM
# (FOXACP_PDL=1); the few-row GEMM's GPU tests with PDL on run first. Results in $OUT/p.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/p
# The float64 checks of the touched kernel come first: the timings mean nothing if they fail.
FOXACP_PDL=1 timeout 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_skinny.py tests/model/test_fused.py \
  2>&1 | tail -3 | tee $OUT/p/pytest_gpu.log
timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_skinny.py 2>&1 | tail -2 | tee -a $OUT/p/pytest_gpu.log
for m in 1 16; do
  timeout 100 python3 experiments/069-decode-pdl/chain_pdl.py --rows $m 2>&1 | grep -v -i warn \
    | tee $OUT/p/chain-m$m.log | tail -8
done
for way in "0 0 plain" "1 1 both" "1 0 inductor"; do set -- $way
  TORCHINDUCTOR_ENABLE_PDL=$1 FOXACP_PDL=$2 timeout 130 python3 -m foxacp.bench.decode --preset 760M --batch 1,16 \
    --contexts 16384 --steps 64 --compile --no-graphs --tag pdl-$3 --out $OUT/p/e2e-$3 2>&1 | grep -v -i warn \
    | grep "compiled" | tee -a $OUT/p/e2e.log
done
