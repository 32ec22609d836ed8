#!/usr/bin/env bash
# Final H100 call: quick benchmark at this commit, then recorded gates from a short 125M run through the benchmark.
set -u
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} PYTHONUNBUFFERED=1
commit=$1
python3 -m foxacp.bench.attention --quick --tag final --out "$OUT" --commit "$commit" 2>&1 | grep -v "Warn\|warn\|bench:" | tail -6
timeout 200 torchrun --standalone --nproc-per-node=1 -m foxacp.cli train --preset 125M --data stdlib --tokenizer byte \
  --steps 24 --out /tmp/runs/g --set seq_len=16384 micro_batch_size=2 warmup_tokens=5e6 log_every=8 2>&1 | grep "^step 24\|eval"
python3 -m foxacp.cli export-gates /tmp/runs/g --out /tmp/gates.safetensors --batch-size 2 --seq-len 16384 2>&1 | tail -2
python3 -m foxacp.bench.attention --configs 12x64 --contexts 4k,8k,16k --gates /tmp/gates.safetensors --layer 6 \
  --tag recorded-gates-125m-24steps --out "$OUT" --commit "$commit" --rep 50 2>&1 | grep -v "Warn\|warn\|bench:" | tail -8
