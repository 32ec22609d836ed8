# One device call (~6 min): CUDA graphs on / off / on in one call on one machine (the bench's settings, recorded
# gates): 360M at 4k (host-paced without graphs on the H200) and 125M at 16k (attention-bound). Results in $OUT/a.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/a
G=results/2026-12-04-20966ce-acp-quality-study-h200/gates-acp.safetensors
for run in "360M 4096 true" "360M 4096 false" "360M 4096 true" "125M 16384 false" "125M 16384 true"; do set -- $run
  timeout 110 python3 -m foxacp.bench.throughput --presets $1 --contexts $2 --gates-regimes recorded --gates $G \
    --cuda-graphs $3 --out $OUT/a/$1-$2-$3-$RANDOM 2>&1 | grep -v -i warn | grep "^| $1" | head -2
done
