# One device call (~6 min, H200): the decode kernels' two combines (the combine kernel, the fused one) in both
# schedules, exact and ACP, at B=1 against cuDNN; where a compiled 760M decode step at B=1 after 16k spends its time
# (kernel by kernel, 049's profile_step.py) with each combine; then the even kernel's launch shape swept at B=1
# (splits x pipeline stages; NUM_WARPS/NUM_STAGES were never measured). Run after the float64 GPU tests
# (tests/ops/test_decode_gpu.py). Results in $OUT/b, in order of priority (a short call keeps the first ones).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/b
A="--configs 24/24x64 --batches 1 --contexts 16k,64k --warmup 150 --rep 80"
timeout 100 python3 -m foxacp.bench.decode_attention $A --rows foxacp-exact,foxacp-acp,sdpa-cudnn \
  --schedules even,balanced --combines kernel,fused --out $OUT/b/combine --tag combine-b1 2>&1 | grep -v -i warn \
  | grep "^|" | tail -20
for combine in kernel fused; do
  timeout 70 python3 experiments/049-compiled-decode/profile_step.py --preset 760M --context 16384 --combine $combine \
    2>&1 | grep -v -i warn | tee $OUT/b/profile_step-16k-$combine.log | head -24
done
timeout 100 python3 -m foxacp.bench.decode_attention $A --rows foxacp-exact,sdpa-cudnn --splits 11,22,33 --stages 2,3,4 \
  --schedules even --out $OUT/b/sweep --tag sweep-b1 2>&1 | grep -v -i warn | grep "^|" | tail -24
