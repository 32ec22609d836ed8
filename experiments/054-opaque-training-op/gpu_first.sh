# The first device call of a session (~10 min): every GPU float64 test of what changed without a GPU (the compiled
# training op, the training kernels' fp16 dS scale and strided data bound, the few-row decode GEMM, fused decode
# steps, fp32 routing, both decode schedules dense and paged, the inference GPU tests, the step-memory estimate),
# then experiment 048's attention benchmark with the study's recorded gates (the last item of issue 23). Results
# in $OUT/f.tar.gz and $OUT/a.tar.gz.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
mkdir -p $OUT/f
timeout 290 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_compiled_op.py tests/ops/test_skinny.py \
  tests/model/test_fused.py tests/ops/test_decode_gpu.py tests/ops/test_paged.py tests/infer/test_long_prompts.py \
  tests/infer/test_gpu.py tests/ops/test_gpu.py tests/train/test_memory.py \
  2>&1 | tee $OUT/f/pytest_gpu.log | tail -8
(cd $OUT && tar czf f.tar.gz f && rm -rf f)
bash experiments/048-acp-quality-study/attention.sh
