# One device call (~9 min): decode attention with the spread and the uniform synthetic profile, B 1 and 8, 16k
# and 64k, both head shapes; foxacp exact and ACP with the even and the balanced split schedule, cuDNN for scale.
# Results copied under $OUT/b.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
mkdir -p $OUT/b
# First the float64 checks of both schedules' kernels (dense and paged) and of the refactored even kernels.
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_decode_gpu.py tests/ops/test_paged.py 2>&1 \
  | tee $OUT/b/pytest_gpu.log | tail -6
for profile in spread uniform; do
  timeout 200 python3 -m foxacp.bench.decode_attention --batches 1,8 --contexts 16k,64k --profile $profile \
    --schedules even,balanced --rows foxacp-exact,foxacp-acp,sdpa-cudnn --warmup 200 --rep 100 \
    --out $OUT/b/$profile 2>&1 | grep -v -i warn | tail -24
done
cd $OUT && tar czf b.tar.gz b && rm -rf b
