# One device call (~9 min) when little device time is left: every GPU float64 test of what changed without a GPU
# (the compiled training op, fp32 routing, both decode schedules dense and paged, the inference GPU tests), then
# 050's probe at 360M/16k with the op opaque and traced. Results in $OUT/f.tar.gz.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
mkdir -p $OUT/f
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider -x tests/ops/test_compiled_op.py tests/ops/test_decode_gpu.py \
  tests/ops/test_paged.py tests/ops/test_skinny.py tests/model/test_fused.py tests/infer/test_long_prompts.py tests/infer/test_gpu.py "tests/ops/test_gpu.py::test_fp32_goes_to_the_pytorch_path_not_tf32_kernels" \
  2>&1 | tee $OUT/f/pytest_gpu.log | tail -8
for path in "" --traced; do
  timeout 140 python3 experiments/050-acp-step-overhead/probe.py --preset 360M --context 16384 $path --out $OUT/f \
    2>&1 | grep -v -i warn | tail -14
done
cd $OUT && tar czf f.tar.gz f && rm -rf f
