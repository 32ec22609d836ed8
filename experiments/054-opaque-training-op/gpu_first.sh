# The first device call of a session (~9 min): every GPU float64 test of what changed without a GPU (the compiled
# training op, the few-row decode GEMM, fused decode steps, fp32 routing, both decode schedules dense and paged,
# the inference GPU tests), then experiment 048's attention benchmark with the study's recorded gates (the last
# item of issue 23). Results in $OUT/f.tar.gz and $OUT/a.tar.gz.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
mkdir -p $OUT/f
timeout 250 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_compiled_op.py tests/ops/test_skinny.py \
  tests/model/test_fused.py tests/ops/test_decode_gpu.py tests/ops/test_paged.py tests/infer/test_long_prompts.py \
  tests/infer/test_gpu.py "tests/ops/test_gpu.py::test_fp32_goes_to_the_pytorch_path_not_tf32_kernels" \
  tests/train/test_memory.py \
  2>&1 | tee $OUT/f/pytest_gpu.log | tail -8
(cd $OUT && tar czf f.tar.gz f && rm -rf f)
bash experiments/048-acp-quality-study/attention.sh
