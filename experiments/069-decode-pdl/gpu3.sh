# One device call (~5 min, Hopper): is PDL's effect the GEMM's or the decode attention's? 760M B=1 after 16k,
# compiled + CUDA graph, synthetic gates, PDL off / in the few-row GEMM only / in every kernel of ours, in the order
# off gemm all all gemm off. Results in $OUT/p3/e2e.log.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/p3
for mode in off gemm all all gemm off; do
  echo "== $mode" | tee -a $OUT/p3/e2e.log
  timeout 80 python3 experiments/069-decode-pdl/which.py $mode -- --preset 760M --batch 1 --contexts 16384 \
    --steps 64 --compile --no-graphs --tag $mode --out /tmp/p3/$mode 2>$OUT/p3/stderr-$mode.log | grep "compiled" | tee -a $OUT/p3/e2e.log
done
