# One device call (~4 min, H200): where a compiled 760M decode step at B=1 after 16k spends its time (kernel by
# kernel, 049's profile_step.py), then the even decode kernel's launch shape swept at B=1 (splits x pipeline stages)
# against cuDNN, to confirm the H100's sweep (README) on the H200. Results in $OUT/b.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/b
timeout 80 python3 experiments/049-compiled-decode/profile_step.py --preset 760M --context 16384 2>&1 \
  | grep -v -i warn | tee $OUT/b/profile_step-16k.log | head -24
timeout 150 python3 -m foxacp.bench.decode_attention --configs 24/24x64 --batches 1,8 --contexts 16k,64k \
  --rows foxacp-exact,sdpa-cudnn --splits 11,22 --stages 2,3 --schedules even --warmup 300 --rep 100 \
  --out $OUT/b/sweep --tag sweep-b1 2>&1 | grep -v -i warn | grep "^|" | tail -24
