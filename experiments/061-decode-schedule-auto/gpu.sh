# One device call (~9 min, H200): the decode split schedule's default "auto" (052) end to end against "even", 760M,
# compiled + CUDA graph, synthetic gates and the study model's recorded gates, B=1 and 16 after 16k; then the
# float64 GPU tests of the decode kernels. Results in $OUT/d.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/d
G=results/2026-12-04-20966ce-acp-quality-study-h200/gates-acp.safetensors
for sched in even auto; do
  # The first run also keeps Inductor's generated code: which glue kernels a decode block compiles into.
  [ $sched = even ] && export TORCH_LOGS=output_code || unset TORCH_LOGS
  timeout 200 python3 -m foxacp.bench.decode --preset 760M --batch 1,16 --contexts 16384 --steps 64 --compile \
    --no-graphs --gates $G --schedule $sched --tag recorded-$sched --out $OUT/d/recorded-$sched \
    2>$OUT/d/stderr-$sched.log | grep -v -i warn | grep "compiled"
done
gzip $OUT/d/stderr-*.log
timeout 140 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_decode_gpu.py tests/infer/test_gpu.py \
  tests/train/test_optim_fused.py tests/train/test_memory.py 2>&1 | tail -12 \
  | tee $OUT/d/pytest_gpu.log
