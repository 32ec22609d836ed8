#!/usr/bin/env bash
# notes/kernels.md #42: the forward's query block through the copy engine (a tensor descriptor) instead of
# pointer loads: 68ae71f's tree (notes/exp/prev) against this one (ab_prof.sh), with the forward alone.
SHAPES=24x64x4096,24x64x16384 FWD_SHAPES=24x64x4096 bash notes/exp/ab_prof.sh
