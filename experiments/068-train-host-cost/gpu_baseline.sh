# One device call (~6 min): the trainer's GPU test again, then the recorded-gates half of the table without CUDA
# graphs on the same machine, the baseline of gpu_table.sh's rows. Results in $OUT/b.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/b
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/train/test_cuda_graphs_gpu.py 2>&1 \
  | tee $OUT/b/pytest_gpu.log | tail -3
G=results/2026-12-04-20966ce-acp-quality-study-h200/gates-acp.safetensors
timeout 330 python3 -m foxacp.bench.throughput --presets 125M 360M --contexts 4096 8192 16384 \
  --gates-regimes recorded --gates $G --cuda-graphs false --deadline-s 260 --out $OUT/b/table 2>&1 \
  | grep -v -i warn | tail -24
