#!/usr/bin/env bash
# ACP vs exact on real text (issue 23), in one device call: train a FoX Pro model twice (ACP on / off, same seed
# and data), then per-position loss and passkey (foxacp eval; --compare-exact and --compare-evict on the ACP
# model), foxacp analyze, export-gates and zero-shot multiple choice on both. Everything lands in $OUT/study.tar.gz (+ $OUT/run.log).
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
TRAIN_S=${TRAIN_S:-165}                   # wall limit per training run: SIGTERM checkpoints and stops it
PARALLEL=${PARALLEL:-0}                   # 1: two GPUs, the two runs (and their evaluations) side by side
SEQ=${SEQ:-4096}
BATCH_TOKENS=${BATCH_TOKENS:-262144}      # 64 rows of 4k per optimizer step
MICRO=${MICRO:-16}
LAYERS=${LAYERS:-8} DMODEL=${DMODEL:-512} HEADS=${HEADS:-8}   # 43M parameters with the 16k vocabulary
LR=${LR:-2e-3}
PASSKEY=${PASSKEY:-0.015}                 # share of training rows that are synthetic passkey sequences
FGATE_BIAS=${FGATE_BIAS:-0}               # initial forget-gate bias (0: f ~ 0.5, fast forgetting at init)
COMPILE=${COMPILE:-false}
EVAL_EVERY=${EVAL_EVERY:-25} CKPT_EVERY=${CKPT_EVERY:-50}
MAXLEN=${MAXLEN:-$((4 * SEQ))}            # per-position loss up to 4x the context
PK_LENGTHS=${PK_LENGTHS:-"1024 2048 4096 8192 16384"}   # multiples of 256: never trained (passkey_mix.py)
TRIALS=${TRIALS:-4}
EVAL_DTYPE=${EVAL_DTYPE:-bfloat16}
ZS_BATCH=${ZS_BATCH:-64}
BUDGET_S=${BUDGET_S:-525}                 # the whole call: training gets what the evaluations do not need
EVAL_RESERVE_S=${EVAL_RESERVE_S:-180}     # kept for the evaluations when the training time is shared out
RES=$RUNS/results
mkdir -p "$RES" "$OUT"
printf '{"passkey_fraction": %s, "fgate_bias_init": %s, "tokens": %s, "seq_len": %s}\n' "$PASSKEY" "$FGATE_BIAS" \
  "$TOKENS" "$SEQ" > "$RES/settings.json"
exec > >(tee -a "$OUT/run.log") 2>&1
t0=$SECONDS
stamp() { echo "[$((SECONDS - t0))s] $*"; }
left() { echo $((t0 + BUDGET_S - SECONDS)); }
quiet() { tr '\r' '\n' | grep -v -i -e warn -e '%|' | tail -n "$1"; }  # last $1 lines, no progress bars
pack() {
  tar czf "$OUT/study.tar.gz" -C "$RES" .
  stamp "wrote $OUT/study.tar.gz ($(du -h "$OUT/study.tar.gz" | cut -f1))"
}
trap pack EXIT  # whatever is done comes back, also when a stage fails or time runs out

train() {  # $1: run name, $2: model.acp, $3: training runs still to go (this one included)
  local run=$RUNS/$1 resume=() limit
  [ -f "$run/done" ] && { stamp "train $1: done before"; return; }
  [ -e "$run/checkpoints/latest" ] && resume=(--resume)
  limit=$((($(left) - EVAL_RESERVE_S) / $3))
  [ "$limit" -gt "$TRAIN_S" ] && limit=$TRAIN_S
  [ "$limit" -lt 30 ] && { stamp "train $1: no time left"; return; }
  stamp "train $1 (acp=$2) ${resume[*]} for at most ${limit}s"
  timeout -s TERM -k 60 "$limit" $PY -m foxacp.cli train --preset 125M --out "$run" "${resume[@]}" \
    --data "tokens:$DATA/tokens" --tokenizer "hf:$DATA/tokenizer.json" --set \
    model.acp="$2" model.fgate_bias_init="$FGATE_BIAS" model.n_layers="$LAYERS" model.d_model="$DMODEL" model.n_heads="$HEADS" \
    seq_len="$SEQ" global_batch_tokens="$BATCH_TOKENS" micro_batch_size="$MICRO" max_tokens="$TOKENS" \
    warmup_tokens=$((TOKENS / 10)) lr="$LR" min_lr_ratio=0.1 passkey_fraction="$PASSKEY" seed=0 \
    eval_every="$EVAL_EVERY" eval_batches=4 ckpt_every="$CKPT_EVERY" ckpt_keep=1 log_every=5 \
    device="$DEVICE" compile="$COMPILE" progress=false tensorboard=false cache_dir="$RUNS/cache" \
    2>&1 | quiet 25
  local rc=${PIPESTATUS[0]}
  stamp "train $1: exit $rc"
  [ "$rc" -eq 0 ] && touch "$run/done"
  [ -f "$run/log.jsonl" ] && cp "$run/log.jsonl" "$RES/log-$1.jsonl"
}

stage() {  # $1: output that marks it done, $2: what; then the command (run with the time left, less 20 s to pack)
  local done=$1 what=$2 limit=$(($(left) - 20))
  shift 2
  # Done only when made after both runs finished: outputs of a run that was cut are made again.
  [ "$done" -nt "$RUNS/acp/done" ] && [ "$done" -nt "$RUNS/exact/done" ] && { stamp "$what: done before"; return; }
  [ "$limit" -lt 10 ] && { stamp "$what: no time left"; return; }
  stamp "$what"
  timeout -k 10 "$limit" "$@" 2>&1 | quiet 12
}

common=(--data "$DATA/heldout" --dtype "$EVAL_DTYPE" --device "$DEVICE")
passkey=(--max-len "$MAXLEN" --passkey-lengths $PK_LENGTHS --trials "$TRIALS")
eval_run() {  # $1: run name, then extra arguments of foxacp eval
  local name=$1
  shift
  stage "$RES/eval-$name/eval.json" "eval $name $*" \
    $PY -m foxacp.cli eval "$RUNS/$name" --out "$RES/eval-$name" "${common[@]}" "${passkey[@]}" "$@"
}
zero_shot() {  # $1: run name
  stage "$RES/zeroshot-$1/zeroshot.json" "zero-shot $1" $PY -m foxacp.eval.zeroshot score "$RUNS/$1" \
    --tasks "$TASKS" --out "$RES/zeroshot-$1" --device "$DEVICE" --dtype "$EVAL_DTYPE" --batch-size "$ZS_BATCH"
}
analyze_and_gates() {
  stage "$RES/analyze-acp/analyze.json" "analyze acp" \
    $PY -m foxacp.cli analyze "$RUNS/acp" --out "$RES/analyze-acp" "${common[@]}"
  stage "$RES/gates-acp.safetensors" "export-gates acp" \
    $PY -m foxacp.cli export-gates "$RUNS/acp" --out "$RES/gates-acp.safetensors" --device "$DEVICE"
}
have_checkpoints() {
  for name in acp exact; do
    [ -e "$RUNS/$name/checkpoints/latest" ] || { stamp "no checkpoint of $name"; return 1; }
  done
}

if [ "$PARALLEL" = 1 ]; then  # two GPUs: one run on each, then the evaluations of each run beside each other
  # `wait` names its jobs: a bare one would also wait for the tee that logs this script.
  CUDA_VISIBLE_DEVICES=0 train acp true 1 &
  first=$!
  CUDA_VISIBLE_DEVICES=1 train exact false 1 &
  wait $first $!
  have_checkpoints || exit 1
  (export CUDA_VISIBLE_DEVICES=0; eval_run acp --compare-exact --compare-evict; analyze_and_gates; zero_shot acp) &
  first=$!
  (export CUDA_VISIBLE_DEVICES=1; eval_run exact; zero_shot exact) &
  wait $first $!
else
  train acp true 2
  train exact false 1
  have_checkpoints || exit 1
  eval_run acp --compare-exact --compare-evict
  eval_run exact
  analyze_and_gates
  zero_shot acp
  zero_shot exact
fi
$PY experiments/048-acp-quality-study/report.py summary "$RES"
