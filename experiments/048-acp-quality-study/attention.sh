# One device call (~5 min): the attention benchmark with the study model's recorded gates (issue 23), at the
# study's own head shape (8 x 64) and the 760M's (24 x 64), 4k and 16k, for its most-pruning (0), a middle (3)
# and its least-pruning (7) layer: one result set each (attention-recorded-study-lN), copied to $OUT/a.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
G=results/2026-12-04-20966ce-acp-quality-study-h200/gates-acp.safetensors
for L in 0 3 7; do
  timeout 95 python3 -m foxacp.bench.attention --configs 8x64,24x64 --contexts 4k,16k --warmup 100 --rep 40 \
    --rounds 2 --gates $G --layer $L --tag recorded-study-l$L --out $OUT/a/l$L 2>&1 | grep -v -i warn | tail -8
done
cd $OUT && tar czf a.tar.gz a && rm -rf a
