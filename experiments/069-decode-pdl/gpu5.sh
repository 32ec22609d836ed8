# One device call (~2.5 min, Hopper): the default now (PDL in Inductor's kernels and ours) through the code users
# run: the inference GPU tests, then 760M B=1 after 16k compiled + CUDA graph with the default and FOXACP_PDL=0.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/p5
timeout 75 python3 -m pytest -q -p no:cacheprovider -m gpu tests/infer/test_gpu.py 2>&1 | tail -2 | tee $OUT/p5/pytest_gpu.log
for pdl in auto 0; do
  echo "== FOXACP_PDL=$pdl" | tee -a $OUT/p5/e2e.log
  FOXACP_PDL=$pdl timeout 45 python3 -m foxacp.bench.decode --preset 760M --batch 1 --contexts 16384 --steps 64 \
    --compile --no-graphs --tag pdl-$pdl --out /tmp/p5/$pdl 2>/dev/null | grep "compiled" | tee -a $OUT/p5/e2e.log
done
