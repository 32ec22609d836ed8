#!/usr/bin/env bash
# Alternate two source trees (notes/exp/run_ab.py): ab.sh OLD_TREE NEW_TREE ROUNDS, a tree being a folder with src/
# inside the working tree (so it travels to the device), e.g. mkdir -p notes/exp/prev && git archive REV src | tar -x -C
# notes/exp/prev (run29 used 36e6386 against the working tree "."). The new tree is checked
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
