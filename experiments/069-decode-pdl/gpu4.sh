# One device call (~3 min, Hopper): PDL everywhere (Inductor's kernels with TORCHINDUCTOR_ENABLE_PDL=1 and all of
# ours) against none, 760M B=1 after 16k, compiled + CUDA graph, synthetic gates, in the order off both both off.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/p4
for mode in off both both off; do
  echo "== $mode" | tee -a $OUT/p4/e2e.log
  [ $mode = both ] && export TORCHINDUCTOR_ENABLE_PDL=1 || export TORCHINDUCTOR_ENABLE_PDL=0
  timeout 70 python3 experiments/069-decode-pdl/which.py $([ $mode = both ] && echo all || echo off) -- \
    --preset 760M --batch 1 --contexts 16384 --steps 64 --compile --no-graphs --tag $mode --out /tmp/p4/$mode \
    2>/dev/null | grep "compiled" | tee -a $OUT/p4/e2e.log
done
