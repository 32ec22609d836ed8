#!/usr/bin/env bash
# Same 125M / 16k run on 1 and on 2 GPUs (FSDP2), same global batch and seed: losses should match step for step.
set -u
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
steps=${1:-8}
nvidia-smi --query-gpu=name --format=csv,noheader
for n in 2 1; do
  timeout 240 torchrun --standalone --nproc-per-node=$n -m foxacp.cli train --preset 125M --data stdlib \
    --tokenizer byte --steps "$steps" --out /tmp/runs/world-$n \
    --set seq_len=16384 micro_batch_size=2 warmup_tokens=5e6 log_every=1 2>&1 | grep -v "it/s" | grep "step\|Error\|error" | tail -12
  cp /tmp/runs/world-$n/log.jsonl "$OUT/train-125m-16k-world$n.jsonl"
done
