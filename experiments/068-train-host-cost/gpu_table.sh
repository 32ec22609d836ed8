# One device call (~9 min): the GPU tests of the trainer with CUDA graphs and of the capture, then the paper's
# table (125M, 360M at 4k / 8k / 16k, init and recorded gates) with today's defaults, CUDA graphs now among them.
# Resumable: rerun with the same $OUT/t to finish the table. Results in $OUT/t.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/t
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/train/test_cuda_graphs_gpu.py \
  tests/ops/test_capture_gpu.py tests/train/test_optim_fused.py 2>&1 | tee $OUT/t/pytest_gpu.log | tail -4
G=results/2026-12-04-20966ce-acp-quality-study-h200/gates-acp.safetensors
timeout 400 python3 -m foxacp.bench.throughput --presets 125M 360M --contexts 4096 8192 16384 \
  --gates-regimes init recorded --gates $G --deadline-s 330 --out $OUT/t/table 2>&1 | grep -v -i warn | tail -30
