# One device call (~8 min): 360M at 4k and 16k, recorded gates, exact and ACP interleaved, 5 rounds of 3 steps:
# first with automatic garbage collection (gc_auto.py, the old behaviour), then as the trainer runs now (collected
# between steps only, train/collect.py). Compare each row's median and min-max. Results in $OUT/g.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
mkdir -p $OUT/g
G=results/2026-12-04-20966ce-acp-quality-study-h200/gates-acp.safetensors
A="--presets 360M --contexts 4096 16384 --gates-regimes recorded --gates $G --rounds 5 --deadline-s 150"
timeout 230 python3 experiments/062-gc-between-steps/gc_auto.py $A --out $OUT/g/auto 2>&1 | grep "^| 360M"
timeout 230 python3 -m foxacp.bench.throughput $A --out $OUT/g/manual 2>&1 | grep "^| 360M"
