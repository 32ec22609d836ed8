# One device call (~8 min, H200): CUDA graphs on and off in one call, 360M at 4k and 8k (the cells where the H200's
# table fell short of the paper without graphs), init and recorded gates. Results in $OUT/a (json only).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/a
G=results/2026-12-04-20966ce-acp-quality-study-h200/gates-acp.safetensors
nvidia-smi --query-gpu=name --format=csv,noheader
for ctx in 4096 8192; do for regime in init recorded; do for graphs in true false; do
  d=$OUT/a/360M-$ctx-$regime-$graphs
  timeout 110 python3 -m foxacp.bench.throughput --presets 360M --contexts $ctx --gates-regimes $regime --gates $G \
    --cuda-graphs $graphs --out $d 2>&1 | grep -v -i warn | grep "^| 360M" | head -2
  rm -f $d/throughput.md $d/throughput.jsonl
done; done; done
