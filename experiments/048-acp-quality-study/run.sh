#!/usr/bin/env bash
# ACP vs exact on real text (issue 23), in one device call: train a FoX Pro model twice (ACP on / off, same seed
# and data), then per-position loss and passkey (foxacp eval, --compare-exact on the ACP model), foxacp analyze,
# export-gates and zero-shot multiple choice on both. Everything lands in $OUT/study.tar.gz (+ $OUT/run.log).
#
# Resumable: runs and evaluations live in $RUNS (gitignored runs/, kept by a warm device machine between calls);
# a second call continues a training run that timed out (--resume) and skips what is done.
# Every knob is an environment variable (defaults: the H200 study; README.md has the CPU dry run).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src
PY=${PY:-python3}
DATA=${DATA:-data/study}                  # made by prepare.sh: tokenizer.json, tokens/, heldout/, tasks.jsonl
TASKS=${TASKS:-$DATA/tasks.jsonl}
RUNS=${RUNS:-runs/048}
OUT=${OUT:-$RUNS/out}
DEVICE=${DEVICE:-cuda}
TOKENS=${TOKENS:-40000000}                # training tokens per run (the budget)
TRAIN_S=${TRAIN_S:-180}                   # wall limit per training run: SIGTERM checkpoints and stops it
SEQ=${SEQ:-4096}
BATCH_TOKENS=${BATCH_TOKENS:-262144}      # 64 rows of 4k per optimizer step
MICRO=${MICRO:-16}
LAYERS=${LAYERS:-8} DMODEL=${DMODEL:-512} HEADS=${HEADS:-8}   # 43M parameters with the 16k vocabulary
LR=${LR:-2e-3}
PASSKEY=${PASSKEY:-0.015}                 # share of training rows that are synthetic passkey sequences
COMPILE=${COMPILE:-false}
EVAL_EVERY=${EVAL_EVERY:-25} CKPT_EVERY=${CKPT_EVERY:-50}
MAXLEN=${MAXLEN:-$((4 * SEQ))}            # per-position loss up to 4x the context
PK_LENGTHS=${PK_LENGTHS:-"1024 2048 4096 8192 16384"}   # multiples of 256: never trained (passkey_mix.py)
TRIALS=${TRIALS:-4}
EVAL_DTYPE=${EVAL_DTYPE:-bfloat16}
ZS_BATCH=${ZS_BATCH:-64}
RES=$RUNS/results
mkdir -p "$RES" "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
t0=$SECONDS
stamp() { echo "[$((SECONDS - t0))s] $*"; }
quiet() { tr '\r' '\n' | grep -v -i -e warn -e '%|' | tail -n "$1"; }  # last $1 lines, no progress bars

train() {  # $1: run name, $2: model.acp
  local run=$RUNS/$1 resume=()
  [ -f "$run/done" ] && { stamp "train $1: done before"; return; }
  [ -e "$run/checkpoints/latest" ] && resume=(--resume)
  stamp "train $1 (acp=$2) ${resume[*]}"
  timeout -s TERM -k 60 "$TRAIN_S" $PY -m foxacp.cli train --preset 125M --out "$run" "${resume[@]}" \
    --data "tokens:$DATA/tokens" --tokenizer "hf:$DATA/tokenizer.json" --set \
    model.acp="$2" model.n_layers="$LAYERS" model.d_model="$DMODEL" model.n_heads="$HEADS" \
    seq_len="$SEQ" global_batch_tokens="$BATCH_TOKENS" micro_batch_size="$MICRO" max_tokens="$TOKENS" \
    warmup_tokens=$((TOKENS / 10)) lr="$LR" min_lr_ratio=0.1 passkey_fraction="$PASSKEY" seed=0 \
    eval_every="$EVAL_EVERY" eval_batches=4 ckpt_every="$CKPT_EVERY" ckpt_keep=1 log_every=5 \
    device="$DEVICE" compile="$COMPILE" progress=false tensorboard=false cache_dir="$RUNS/cache" \
    2>&1 | quiet 25
  local rc=${PIPESTATUS[0]}
  stamp "train $1: exit $rc"
  [ "$rc" -eq 0 ] && touch "$run/done"
}

evaluate() {  # $1: run name, then extra arguments of foxacp eval
  local name=$1
  shift
  [ -f "$RUNS/$name/done" ] && [ -f "$RES/eval-$name/eval.json" ] && return
  stamp "eval $name"
  $PY -m foxacp.cli eval "$RUNS/$name" --data "$DATA/heldout" --out "$RES/eval-$name" --max-len "$MAXLEN" \
    --passkey-lengths $PK_LENGTHS --trials "$TRIALS" --dtype "$EVAL_DTYPE" --device "$DEVICE" "$@" 2>&1 | quiet 4
  stamp "zero-shot $name"
  $PY -m foxacp.eval.zeroshot score "$RUNS/$name" --tasks "$TASKS" --out "$RES/zeroshot-$name" \
    --device "$DEVICE" --dtype "$EVAL_DTYPE" --batch-size "$ZS_BATCH" 2>&1 | quiet 12
}

train acp true
train exact false
for name in acp exact; do
  [ -e "$RUNS/$name/checkpoints/latest" ] || { stamp "no checkpoint of $name"; exit 1; }
  cp "$RUNS/$name/log.jsonl" "$RES/log-$name.jsonl"
done
evaluate acp --compare-exact
evaluate exact
stamp "analyze acp"
$PY -m foxacp.cli analyze "$RUNS/acp" --data "$DATA/heldout" --out "$RES/analyze-acp" --dtype "$EVAL_DTYPE" \
  --device "$DEVICE" 2>&1 | quiet 2
stamp "export-gates acp"
$PY -m foxacp.cli export-gates "$RUNS/acp" --out "$RES/gates-acp.safetensors" --device "$DEVICE" 2>&1 | quiet 1
tar czf "$OUT/study.tar.gz" -C "$RES" .
stamp "wrote $OUT/study.tar.gz ($(du -h "$OUT/study.tar.gz" | cut -f1))"
$PY experiments/048-acp-quality-study/report.py summary "$RES"
