#!/usr/bin/env bash
# 125M preset at 16k context, ACP on vs off, same seed and data, on one GPU. Logs copied to $OUT.
# usage: bash notes/gpu_train_pair.sh STEPS SECONDS_PER_RUN
set -u
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
steps=${1:-24}; limit=${2:-270}
for acp in true false; do
  timeout "$limit" torchrun --standalone --nproc-per-node=1 -m foxacp.cli train --preset 125M --data stdlib \
    --tokenizer byte --steps "$steps" --out /tmp/runs/acp-$acp \
    --set seq_len=16384 micro_batch_size=2 warmup_tokens=5e6 log_every=2 model.acp=$acp 2>&1 | grep -v "it/s" | tail -6
  cp /tmp/runs/acp-$acp/log.jsonl "$OUT/train-125m-16k-acp-$acp.jsonl"
done
