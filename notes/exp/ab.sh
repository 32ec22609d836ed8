#!/usr/bin/env bash
# Alternate two source trees (notes/exp/run_ab.py): ab.sh OLD_TREE NEW_TREE ROUNDS; the new tree is checked
# against float64 on the GPU first. Prints a table of medians last (notes/exp/ab_table.py).
set -u
old=$1 new=$2 rounds=${3:-3}
export PYTHONUNBUFFERED=1
for r in $(seq 0 $((rounds - 1))); do
  check=""; [ "$r" = 0 ] && check=1
  PYTHONPATH=$new/src:notes/exp python3 notes/exp/run_ab.py new "$r" $check 2>&1 | grep -v -i warn
  PYTHONPATH=$old/src:notes/exp python3 notes/exp/run_ab.py old "$r" 2>&1 | grep -v -i warn
done
python3 notes/exp/ab_table.py "$OUT/ab.jsonl"
