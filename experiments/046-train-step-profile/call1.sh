# One device call (session 3): issue 18's float64 check, every GPU test, the training-step profiles, HF bench.
set -u
export PYTHONUNBUFFERED=1
d=experiments/045-exact-decay-tables
mkdir -p $OUT/c1
(PYTHONPATH=src python3 $d/run.py check 2>&1 | grep -v -i warn > $OUT/c1/check.log; echo "check rc=$?"; tail -18 $OUT/c1/check.log)
PYTHONPATH=src timeout 300 python3 -m pytest -q -m gpu tests 2>&1 | tail -15 | tee $OUT/c1/pytest_gpu.log
for c in "" "--compile"; do for v in 50304 320; do
 PYTHONPATH=src timeout 240 python3 experiments/046-train-step-profile/run.py --preset 125M --seq-len 16384 --micro-batch 2 --vocab $v $c --out $OUT/c1 2>&1 | grep -v -i warn | tail -30
done; done
PYTHONPATH=src timeout 120 python3 -m foxacp.hf.bench --preset 125M --batch 1 --prompt-len 512 --new-tokens 256 --dtype bfloat16 2>&1 | tail -8 | tee $OUT/c1/hf_bench.log
