"""The decode bench with PDL in only some of our kernels: `which.py gemm|all|off -- BENCH ARGS`. "gemm" keeps the
decode attention's kernels on plain launches (their `pdl_args` patched to off) and the few-row GEMM on PDL; the
custom ops launch in this process, so the patch reaches the captured graph."""

import os
import runpy
import sys

if __name__ == "__main__":  # Inductor's compile workers import this file again: run the bench once
    mode, rest = sys.argv[1], sys.argv[sys.argv.index("--") + 1 :]
    os.environ["FOXACP_PDL"] = "0" if mode == "off" else "1"
    if mode == "gemm":
        from foxacp.ops import triton_balance, triton_decode

        triton_decode.pdl_args = triton_balance.pdl_args = lambda device: {"PDL": False}
    sys.argv = ["foxacp.bench.decode", *rest]
    runpy.run_module("foxacp.bench.decode", run_name="__main__", alter_sys=True)
