# One device call (~10 min): the paper's table again with today's defaults (blocks compiled with the opaque
# attention op, 054; chunked loss, 047; checkpointing auto, 058), 125M and 360M at 4k / 8k / 16k, init and
# recorded gates, the modes interleaved; then where a 760M step's time goes now (046's profiler, compiled, exact).
# Resumable: rerun with the same $OUT/t to finish the table. Results in $OUT/t.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
mkdir -p $OUT/t
timeout 40 python3 -m pytest -q -p no:cacheprovider tests/train/test_optim_fused.py 2>&1 | tail -2
G=results/2026-12-04-20966ce-acp-quality-study-h200/gates-acp.safetensors
timeout 380 python3 -m foxacp.bench.throughput --presets 125M 360M --contexts 4096 8192 16384 \
  --gates-regimes init recorded --gates $G --deadline-s 310 --out $OUT/t/table 2>&1 | grep -v -i warn | tail -30
for c in "4096 4" "16384 1"; do set -- $c
  timeout 85 python3 experiments/046-train-step-profile/run.py --preset 760M --seq-len $1 --micro-batch $2 \
    --compile --steps 2 --out $OUT/t/profile 2>&1 | grep -v -i warn | tail -24
done
