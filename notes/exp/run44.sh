#!/usr/bin/env bash
# notes/kernels.md #44: the forward's epilogue divides once per row (acc * (1 / l)) instead of once per element
# (with #43's reordered prologue): 97c2407's tree (notes/exp/prev) against this one (ab_prof.sh), with the
# forward alone at 4k and 8k. Log: $OUT/run44.txt.
SHAPES=24x64x4096,24x64x16384 FWD_SHAPES=24x64x4096,24x64x8192 bash notes/exp/ab_prof.sh 2>&1 | tee "$OUT/run44.txt"
