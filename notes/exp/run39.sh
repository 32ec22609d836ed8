#!/usr/bin/env bash
# notes/kernels.md #39: ACP's own cost at the exact work (log_eps = -1e9 prunes nothing) per kernel, and dK/dV's
# diagonal loop bounded without Q_HI: 1d93fe5's tree (notes/exp/prev) against this one (ab_prof.sh).
EPS=none,-10,-1e9 SHAPES=24x64x4096,24x64x16384 bash notes/exp/ab_prof.sh
