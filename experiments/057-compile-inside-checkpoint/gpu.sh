# One device call (~9 min): the 760M preset's throughput with its blocks compiled inside the activation checkpoint
# (exact and ACP, init gates, 4k and 16k), against results/2026-12-04-20966ce-throughput-h200; then experiment
# 050's probe of a 360M step at 16k (graph breaks, recompiles, kernel split; the op opaque). Results in $OUT/c.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
mkdir -p $OUT/c
timeout 400 python3 -m foxacp.bench.throughput --presets 760M --contexts 4096 16384 --modes exact acp \
  --gates-regimes init --deadline-s 300 --out $OUT/c/throughput 2>&1 | grep -v -i warn | tail -12
timeout 150 python3 experiments/050-acp-step-overhead/probe.py --preset 360M --context 16384 --out $OUT/c \
  2>&1 | grep -v -i warn | tail -12
