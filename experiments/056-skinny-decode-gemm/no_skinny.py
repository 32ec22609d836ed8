"""Run ``python -m foxacp.bench.decode`` with the few-row kernel turned off (every GEMM on cuBLAS), as the
baseline of the same device call: ``python experiments/056-skinny-decode-gemm/no_skinny.py <bench.decode args>``."""

import runpy

import foxacp.ops.skinny as skinny

skinny.takes_skinny = lambda *args: False  # skinny_linear looks it up at each call: F.linear everywhere
runpy.run_module("foxacp.bench.decode", run_name="__main__", alter_sys=True)
