# One device call: GPU tests of decoding, then the end-to-end decode benchmark with compiled blocks (760M, bf16).
set -u
export PYTHONUNBUFFERED=1
mkdir -p $OUT/d
PYTHONPATH=src timeout 240 python3 -m pytest -q -m gpu tests/infer tests/ops/test_decode_gpu.py 2>&1 | tail -4 | tee $OUT/d/pytest_gpu.log
PYTHONPATH=src timeout 300 python3 -m foxacp.bench.decode --preset 760M --batch 1,16 --contexts 4096,16384 --steps 64 --compile --out $OUT/d/e2e 2>&1 | grep -v -i warn | tail -20
PYTHONPATH=src timeout 150 python3 -m foxacp.bench.decode --preset 760M --batch 1 --contexts 65536 --steps 32 --compile --out $OUT/d/e2e64k 2>&1 | grep -v -i warn | tail -8
