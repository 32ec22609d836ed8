# One device call (~2 min, H200): the 96 few-row GEMMs of a 760M decode step at B=1 and B=16 in one CUDA graph,
# alone and with 1 or 2 small kernels after each. Results in $OUT/c.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/c
for m in 1 16; do
  timeout 100 python3 experiments/067-decode-gemm-chain/chain.py --rows $m 2>&1 | grep -v -i warn \
    | tee $OUT/c/chain-m$m.log | tail -6
done
