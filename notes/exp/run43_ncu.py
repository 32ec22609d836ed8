"""notes/kernels.md #43: hardware counters of the forward kernel, exact and ACP, at 24x64 4k (one call each).

    ncu ... python notes/exp/run43_ncu.py      (PYTHONPATH=src:notes/exp)

Runs each forward twice (the first compiles); ncu is told to skip the first two forward launches.
"""

import run_acp
import torch

import foxacp

foxacp.set_value_checks(False)
leaves, do = run_acp.inputs(24, 64, 4096)
for eps in (None, -10.0, None, -10.0):
    run_acp.steps(leaves, do, 64, eps)["fwd"]()
torch.cuda.synchronize()
