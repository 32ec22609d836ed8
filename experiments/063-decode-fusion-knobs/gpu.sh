# One device call (~6 min): a compiled 760M decode step (B=1 after 4k, bf16) with Inductor's fusion settings, one
# process each: its kernels per step and its time inside a CUDA graph (experiment 049's profile_step.py).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src TRITON_INTERPRET=0
mkdir -p $OUT/f
for knobs in "" "triton.enable_pdl=1" "combo_kernels=1" "aggressive_fusion=1" "combo_kernels=1 aggressive_fusion=1"; do
  timeout 75 python3 experiments/049-compiled-decode/profile_step.py --preset 760M --context 4096 --inductor $knobs \
    2>&1 | grep -v -i warn | tee -a $OUT/f/profile_step.log | head -8
done
