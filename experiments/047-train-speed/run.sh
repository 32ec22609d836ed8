#!/usr/bin/env bash
# Experiment 047 on one GPU in about 5 minutes: the chunked head + loss against full logits (bf16, float64
# reference), a 125M 16k training step eager / compiled / compiled + chunked loss at vocabularies 50304 and 320
# (experiments/046-train-step-profile/run.py), then the throughput table --quick (resumable: run again to finish
# it if the deadline stopped it). Writes under $OUT: ce_check.json, profiles.jsonl, throughput/{jsonl,json,md}.
#     OUT=/some/dir bash experiments/047-train-speed/run.sh
set -uo pipefail
: "${OUT:?set OUT to the output folder}"
export PYTHONPATH=src
start=$SECONDS
tmp=$(mktemp -d)
python experiments/047-train-speed/check_ce.py --out "$OUT"
profile() { python experiments/046-train-step-profile/run.py --preset 125M --seq-len 16384 --micro-batch 2 --steps 2 \
    --out "$tmp" "$@" | grep -E "ms/step"; }
profile --vocab 50304 --loss full
profile --vocab 50304 --loss full --compile
profile --vocab 50304 --loss chunked --compile
profile --vocab 320 --loss full --compile
profile --vocab 320 --loss chunked --compile
python -c "import json,sys; [print(json.dumps(json.load(open(f)))) for f in sys.argv[1:]]" "$tmp"/*.json > "$OUT/profiles.jsonl"
left=$((285 - (SECONDS - start)))
echo "profiles done at $((SECONDS - start)) s; throughput --quick starts configurations for $left s more"
python -m foxacp.bench.throughput --quick --out "$OUT/throughput" --deadline-s "$((left > 30 ? left - 30 : 0))" \
    | grep -vE "^\|? *$" | tail -22
echo "total $((SECONDS - start)) s"
