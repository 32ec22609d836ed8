# One device call (~9 min): eviction and end-to-end decoding with the study model's recorded gates, every model
# layer reading the file's layer l mod 8 (the benchmarks' default since 2632342). Results come back in $OUT/g.tar.gz.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
G=results/2026-12-04-20966ce-acp-quality-study-h200/gates-acp.safetensors
mkdir -p $OUT/g
timeout 170 python3 -m foxacp.bench.evict --gates $G --out $OUT/g/evict 2>&1 | grep -v -i warn | tail -14
timeout 190 python3 -m foxacp.bench.decode --preset 760M --batch 1,16 --contexts 16384 --steps 64 --compile \
  --gates $G --out $OUT/g/decode 2>&1 | grep -v -i warn | tail -14
# The balanced split schedule (experiment 052) at 64k: does it lift tokens/s at the evicting cache's batch?
timeout 150 python3 -m foxacp.bench.evict --gates $G --contexts 65536 --schedule balanced \
  --out $OUT/g/evict-balanced 2>&1 | grep -v -i warn | tail -8
cd $OUT && tar czf g.tar.gz g && rm -rf g
