"""Block-size sweep for the Triton kernels on the current GPU (exact mode). Prints ms per kernel."""

import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench

import foxacp
from foxacp.ops import attention as api
from foxacp.ops import triton_op
from foxacp.ops.config import Blocks, KernelConfig
from foxacp.ops.gate import cumulative_gate
from foxacp.ops.validate import check_inputs

H, D = 24, int(sys.argv[1]) if len(sys.argv) > 1 else 64
H = 24 if D == 64 else 12
T = 8192
B = 32768 // T
dev = "cuda"
q, k, v = (torch.randn(B, T, H, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
g = F.logsigmoid(torch.linspace(-1, 8, H, device=dev) + torch.randn(B, T, H, device=dev)).float()
do = torch.randn_like(q)
problem = check_inputs(q, k, v, g, None, None, None, None, "triton")
qp, kp, vp, dop = (t.reshape(-1, H, D) for t in (q, k, v, do))
c_t = cumulative_gate(g.reshape(-1, H), problem.cu_k, True, B).t().contiguous()
flops = 4 * B * H * T * T * D / 2


def fwd_ms(cfg):
    return do_bench(lambda: triton_op._forward(qp, kp, vp, c_t, problem, None, cfg), return_mode="median")


def bwd_ms(cfg):
    o, lse = triton_op._forward(qp, kp, vp, c_t, problem, None, cfg)
    return do_bench(lambda: triton_op._backward(dop, qp, kp, vp, c_t, o, lse, problem, None, cfg), return_mode="median")


base = api.kernel_config(q.device, D)
print(f"D={D} H={H} T={T} B={B}; base {base}")
fwd_variants = [
    Blocks(128, 128, 8, 3),
    Blocks(128, 64, 4, 3),
    Blocks(128, 64, 8, 3),
    Blocks(128, 128, 8, 2),
    Blocks(64, 64, 4, 3),
    Blocks(128, 32, 4, 3),
]
for b in fwd_variants:
    cfg = KernelConfig(128, 128, b, base.dkdv, base.dq)
    try:
        ms = fwd_ms(cfg)
        print(f"fwd {b}: {ms:.3f} ms  {flops / ms / 1e9:.0f} TFLOP/s")
    except Exception as e:  # noqa: BLE001
        print(f"fwd {b}: failed {type(e).__name__}: {str(e)[:100]}")
dkdv_variants = [
    Blocks(64, 128, 8, 3),
    Blocks(32, 128, 4, 3),
    Blocks(64, 128, 4, 3),
    Blocks(128, 128, 8, 2),
    Blocks(64, 64, 4, 3),
    Blocks(32, 64, 4, 3),
]
dq_variants = [
    Blocks(128, 64, 8, 3),
    Blocks(128, 32, 4, 3),
    Blocks(64, 64, 4, 3),
    Blocks(128, 64, 4, 3),
    Blocks(64, 32, 4, 3),
]
for b in dkdv_variants:
    cfg = KernelConfig(128, 128, base.fwd, b, base.dq)
    try:
        print(f"bwd dkdv {b} (dq base): {bwd_ms(cfg):.3f} ms")
    except Exception as e:  # noqa: BLE001
        print(f"bwd dkdv {b}: failed {type(e).__name__}: {str(e)[:100]}")
for b in dq_variants:
    cfg = KernelConfig(128, 128, base.fwd, base.dkdv, b)
    try:
        print(f"bwd dq {b} (dkdv base): {bwd_ms(cfg):.3f} ms")
    except Exception as e:  # noqa: BLE001
        print(f"bwd dq {b}: failed {type(e).__name__}: {str(e)[:100]}")

# Overheads outside the kernels, forward only, exact and ACP.
for eps in (None, -10.0):
    full = do_bench(lambda: foxacp.forgetting_attention(q, k, v, g, log_eps=eps), return_mode="median")
    plan = do_bench(lambda: foxacp.ops.make_plan(q, k, g), return_mode="median")
    print(f"api forward log_eps={eps}: {full:.3f} ms (make_plan alone {plan:.3f} ms)")
print(f"kernel fwd alone (base): {fwd_ms(base):.3f} ms")
with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    ms = do_bench(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True), return_mode="median")
    print(f"cudnn fwd: {ms:.3f} ms  {flops / ms / 1e9:.0f} TFLOP/s")
