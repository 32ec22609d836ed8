#!/usr/bin/env bash
# notes/kernels.md #38: the gate scan and its gradient with one program per chunk. On the GPU: the float64
# correctness grid and the GPU tests, the new scan against the old one (notes/exp/prev: `git archive 64b6727 src`)
# bit for bit, then per-kernel profiler times of both trees (run_prof.py) in alternating processes.
set -u
export PYTHONUNBUFFERED=1
PYTHONPATH=src python3 -m foxacp.bench.correctness --out "$OUT" 2>&1 | tail -2
PYTHONPATH=src python3 -m pytest -q -m gpu tests/ops/test_gpu.py 2>&1 | tail -1
PYTHONPATH=src:notes/exp python3 - <<'PY' 2>&1 | grep -v -i warn
import torch
from foxacp.ops import triton_gate as new
from foxacp.ops.validate import check_inputs
src = open("notes/exp/prev/src/foxacp/ops/triton_gate.py").read().replace("from .", "from foxacp.ops.")
old = type(new)("old_gate"); exec(compile(src, "old_gate", "exec"), old.__dict__)
for B, T, H, cu in [(8, 4096, 24, None), (2, 16384, 24, None), (1, 7000, 4, [0, 1, 2500, 3001, 7000])]:
    dev = "cuda"
    q = torch.randn(B, T, H, 64, device=dev, dtype=torch.bfloat16)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, device=dev) + 2)
    cu_t = None if cu is None else torch.tensor(cu, dtype=torch.int32, device=dev)
    p = check_inputs(q, q, q, g, None, cu_t, None, None, "triton")
    a, b = old.gate_scan(g.reshape(-1, H), p, 128), new.gate_scan(g.reshape(-1, H), p, 128)
    dcq, dck = torch.randn(H, B * T, device=dev), torch.randn(H, B * T, device=dev)
    ga, gb = old.gate_grad(dcq, dck, p), new.gate_grad(dcq, dck, p)
    print(f"bitwise {B}x{T} H{H} packed={cu is not None}: c {torch.equal(a[0], b[0])} kc {torch.equal(a[1], b[1])} "
          f"grad {torch.equal(ga, gb)}", flush=True)
PY
for r in 0 1; do
  for tree in notes/exp/prev .; do
    name=$([ "$tree" = . ] && echo new || echo old)
    SHAPES=24x64x4096,24x64x16384,12x64x4096 PYTHONPATH=$tree/src:notes/exp python3 notes/exp/run_prof.py "$name$r" src 2>&1 | grep -v -i warn
  done
done
