# One device call (~7 min, Hopper): PDL on by default (the few-row GEMM and the decode attention's plan, split and
# combine kernels). First the float64 GPU tests of those kernels and of the compiled decode step with it on (the
# default), then the 760M decode step at B=1 and 16 after 16k (compiled + CUDA graph) with FOXACP_PDL=0 and with
# the default, interleaved off/on/off/on with synthetic gates, then once each with the study model's recorded gates.
# Results in $OUT/p2 (few files: the device's copy-back drops folders with many).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/p2
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_decode_gpu.py tests/ops/test_skinny.py \
  tests/model/test_fused.py tests/infer/test_gpu.py 2>&1 | tail -4 | tee $OUT/p2/pytest_gpu.log
G=results/2026-12-04-20966ce-acp-quality-study-h200/gates-acp.safetensors
run() {  # $1 FOXACP_PDL, $2 tag, rest: extra bench arguments
  local pdl=$1 tag=$2; shift 2
  echo "== $tag" | tee -a $OUT/p2/e2e.log
  FOXACP_PDL=$pdl timeout 110 python3 -m foxacp.bench.decode --preset 760M --batch 1,16 --contexts 16384 --steps 64 \
    --compile --no-graphs --tag $tag --out /tmp/p2/$tag "$@" 2>&1 | grep -v -i warn | grep "compiled" \
    | tee -a $OUT/p2/e2e.log
}
run 0 synthetic-off-1; run auto synthetic-on-1; run 0 synthetic-off-2; run auto synthetic-on-2
run 0 recorded-off --gates $G; run auto recorded-on --gates $G
for t in synthetic-off-2 synthetic-on-2 recorded-off recorded-on; do cp /tmp/p2/$t/decode-e2e.json $OUT/p2/$t.json; done
