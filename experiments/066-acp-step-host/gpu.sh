# One device call (~5 min, H200): 360M at 4k (ACP's step slower than exact's in 060's H200 table) and 125M at 4k
# (ACP's gain as expected) for contrast, exact and ACP twice each in one process: wall time against kernel-busy
# time, syncs, idle gaps, host self time. Results in $OUT/h.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/h
timeout 200 python3 experiments/066-acp-step-host/probe.py --preset 360M --seq-len 4096 --micro-batch 4 --out $OUT/h \
  2>&1 | grep -v -i warn | tee $OUT/h/probe-360M.log | tail -16
timeout 120 python3 experiments/066-acp-step-host/probe.py --preset 125M --seq-len 4096 --micro-batch 8 --out $OUT/h \
  2>&1 | grep -v -i warn | tee $OUT/h/probe-125M.log | tail -8
