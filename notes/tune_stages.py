"""Pipeline-depth and block sweep at the target shape (16k, 24 heads of 64, B=2), exact mode."""

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from foxacp.ops import attention as api
from foxacp.ops import triton_op
from foxacp.ops.config import Blocks, KernelConfig
from foxacp.ops.gate import cumulative_gate
from foxacp.ops.validate import check_inputs

H, D, T, B = 24, 64, 16384, 2
q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
g = F.logsigmoid(torch.linspace(-1, 8, H, device="cuda") + torch.randn(B, T, H, device="cuda")).float()
do = torch.randn_like(q)
problem = check_inputs(q, k, v, g, None, None, None, None, "triton")
qp, kp, vp, dop = (t.reshape(-1, H, D) for t in (q, k, v, do))
c_t = cumulative_gate(g.reshape(-1, H), problem.cu_k, True, B)
base = api.kernel_config(q.device, D)
o, lse = triton_op._forward(qp, kp, vp, c_t, problem, None, base)


def t_fwd(b):
    cfg = KernelConfig(128, 128, b, base.dkdv, base.dq)
    return do_bench(lambda: triton_op._forward(qp, kp, vp, c_t, problem, None, cfg), return_mode="median")


def t_bwd(cfg):
    return do_bench(lambda: triton_op._backward(dop, qp, kp, vp, c_t, o, lse, problem, None, cfg), return_mode="median")


def show(name, fn):
    try:
        print(f"{name}: {fn():.3f} ms", flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"{name}: failed {type(e).__name__} {str(e)[:80]}", flush=True)


print(f"base {base}")
for w, st in ((4, 2), (4, 3), (4, 4), (4, 5), (8, 3), (8, 4)):
    show(f"fwd 128x64 w{w} s{st}", lambda w=w, st=st: t_fwd(Blocks(128, 64, w, st)))
show("fwd 64x64 w4 s4", lambda: t_fwd(Blocks(64, 64, 4, 4)))
show("fwd 128x128 w8 s2", lambda: t_fwd(Blocks(128, 128, 8, 2)))
for bm, bn, w, st in (
    (32, 128, 4, 2),
    (32, 128, 4, 3),
    (32, 128, 4, 4),
    (32, 128, 4, 5),
    (64, 128, 8, 2),
    (64, 128, 8, 3),
    (32, 64, 4, 3),
    (32, 64, 4, 4),
    (64, 64, 4, 3),
    (16, 128, 4, 4),
):
    show(
        f"bwd dkdv {bm}x{bn} w{w} s{st}",
        lambda b=Blocks(bm, bn, w, st): t_bwd(KernelConfig(128, 128, base.fwd, b, base.dq)),
    )
for bm, bn, w, st in (
    (128, 64, 4, 2),
    (128, 64, 4, 3),
    (128, 64, 4, 4),
    (128, 64, 8, 3),
    (64, 64, 4, 3),
    (64, 64, 4, 4),
    (128, 32, 4, 3),
    (64, 128, 4, 3),
):
    show(
        f"bwd dq {bm}x{bn} w{w} s{st}",
        lambda b=Blocks(bm, bn, w, st): t_bwd(KernelConfig(128, 128, base.fwd, base.dkdv, b)),
    )
