# One device call (~6 min): the capture test, host cost per call of the training op and its parts (tiny shape),
# then 360M at 4k with CUDA-graphed blocks against today's compiled blocks. Results in $OUT/t.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/t
timeout 100 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_capture_gpu.py 2>&1 | tail -3
timeout 120 python3 experiments/068-train-host-cost/host_cost.py 2>&1 | grep -v -i warn | tee $OUT/t/host_cost.log \
  | head -36
timeout 330 python3 experiments/068-train-host-cost/graphs.py --preset 360M --seq-len 4096 --micro-batch 4 \
  --out $OUT/t 2>&1 | grep -v -i warn | tee $OUT/t/graphs-360M.log | tail -12
