# One device call (~9 min): the compiled op against float64 on the GPU, then experiment 050's probe (graph breaks,
# recompiles, kernel split of an exact and an ACP step) for the 360M preset at 4k and 16k, with the op opaque
# (the default) and traced as before. Results come back in $OUT/o.tar.gz.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
mkdir -p $OUT/o
timeout 100 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_compiled_op.py 2>&1 \
  | tee $OUT/o/pytest_gpu.log | tail -4
for ctx in 4096 16384; do
  for path in "" --traced; do
    timeout 110 python3 experiments/050-acp-step-overhead/probe.py --preset 360M --context $ctx $path --out $OUT/o \
      2>&1 | grep -v -i warn | tail -12
  done
done
cd $OUT && tar czf o.tar.gz o && rm -rf o
