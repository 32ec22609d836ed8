#!/usr/bin/env bash
# Passkey answers with and without eviction on a model that retrieves (issues 21, 23), on this machine's CPU:
# a small FoX Pro (ACP on) trained on the study's BPE training split with most rows replaced by synthetic passkey
# sequences (foxacp.train.passkey_mix: lengths and depths off the evaluated grid), then foxacp eval with
# --compare-exact and --compare-evict on lengths up to 8x the training context.
# Knobs are environment variables; a second call resumes training (--resume) and skips a finished eval.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/study}                  # made by experiments/048-acp-quality-study/prepare.sh
RUN=${RUN:-runs/053}
THREADS=${THREADS:-1}                     # torch threads for training (the other core stays free)
TRAIN_S=${TRAIN_S:-2700}
TOKENS=${TOKENS:-4000000}
SEQ=${SEQ:-256} BATCH_TOKENS=${BATCH_TOKENS:-4096}
LAYERS=${LAYERS:-3} DMODEL=${DMODEL:-128} HEADS=${HEADS:-4}
PASSKEY=${PASSKEY:-0.9}
FGATE_BIAS=${FGATE_BIAS:-4}               # initial forget-gate bias: f ~ 0.98, slow forgetting (the default 0 never
                                          # learned retrieval here, nor in 048: see README)
PK_LENGTHS=${PK_LENGTHS:-"256 512 1024 2048"}   # multiples of 256: never trained (passkey_mix.py)
TRIALS=${TRIALS:-8}
mkdir -p "$RUN"
exec > >(tee -a "$RUN/run.log") 2>&1
echo "053 at $(git rev-parse --short HEAD)$(git diff --quiet || echo -dirty), $(date -u +%FT%TZ)"
if [ ! -f "$RUN/train/done" ]; then
  resume=()
  [ -e "$RUN/train/checkpoints/latest" ] && resume=(--resume)
  OMP_NUM_THREADS=$THREADS timeout -s TERM -k 60 "$TRAIN_S" $PY -m foxacp.cli train --preset 125M \
    --out "$RUN/train" "${resume[@]}" --data "tokens:$DATA/tokens" --tokenizer "hf:$DATA/tokenizer.json" --set \
    model.acp=true model.fgate_bias_init="$FGATE_BIAS" model.n_layers="$LAYERS" model.d_model="$DMODEL" model.n_heads="$HEADS" seq_len="$SEQ" \
    global_batch_tokens="$BATCH_TOKENS" micro_batch_size=$((BATCH_TOKENS / SEQ)) max_tokens="$TOKENS" \
    warmup_tokens=$((TOKENS / 20)) lr=3e-3 min_lr_ratio=0.1 passkey_fraction="$PASSKEY" seed=0 \
    eval_every=100 eval_batches=4 ckpt_every=50 ckpt_keep=1 log_every=25 device=cpu compile=false \
    progress=false tensorboard=false cache_dir="$RUN/cache" 2>&1 | tr '\r' '\n' | grep -v -i warn
  [ "${PIPESTATUS[0]}" -eq 0 ] && touch "$RUN/train/done"
fi
[ -f "$RUN/eval/eval.json" ] || OMP_NUM_THREADS=2 $PY -m foxacp.cli eval "$RUN/train" --out "$RUN/eval" \
  --data "$DATA/heldout" --device cpu --dtype float32 --compare-exact --compare-evict \
  --passkey-lengths $PK_LENGTHS --trials "$TRIALS" 2>&1 | tr '\r' '\n' | grep -v -e '%|' -i -e warn
