"""Host time per call of the training op as a compiled block calls it (the opaque custom ops), exact and ACP.

    PYTHONPATH=src python experiments/068-train-host-cost/host_cost.py

At a tiny shape (B=1, T=256, 16 heads x 64, bf16) the GPU work is a few microseconds, so the wall time of a
loop of calls without synchronisation is the host's cost per call. Prints the cost of the forward and backward
ops, of their parts (gate scan, plan, forward kernel), of a bare Triton launch with few and with many
arguments for scale, and torch SDPA's forward + backward; then the Python functions with the most self time
(cProfile) over ACP forward + backward calls.
"""

from __future__ import annotations

import cProfile
import gc
import pstats
import time

import torch
import triton
import triton.language as tl

from foxacp.ops.config import KernelConfig, kernel_config
from foxacp.ops.custom_ops import _problem, attention_bwd_op, attention_fwd_op
from foxacp.ops.triton_gate import table_scale
from foxacp.ops.triton_op import _desc, _forward, packed, prepare
from foxacp.ops.validate import check_inputs, set_value_checks


@triton.jit
def _few(X, n):
    pass


@triton.jit
def _many(X, Y, Z, W, a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, A: tl.constexpr, B: tl.constexpr):
    pass


def per_call_us(fn, calls: int = 300) -> float:
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    host = time.perf_counter() - t
    torch.cuda.synchronize()
    return 1e6 * host / calls


def main() -> None:
    set_value_checks(False)
    dev = torch.device("cuda")
    B, T, H, D = 1, 256, 16, 64
    q, k, v = (torch.randn(B, T, H, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
    g = -torch.rand(B, T, H, device=dev) * 0.1
    problem = check_inputs(q, k, v, g, None, None, None, -10.0, "triton")
    cfg = kernel_config(dev, D)
    scale = table_scale(problem.sm_scale)
    ints = cfg.to_ints()
    bound = torch.full((H,), 20.0, device=dev)
    rows = {}
    x = torch.zeros(16, device=dev)
    rows["bare Triton launch, 2 args"] = per_call_us(lambda: _few[(1,)](x, 1))
    rows["bare Triton launch, 20 args"] = per_call_us(lambda: _many[(1,)](x, x, x, x, *range(16), A=1, B=2))
    for mode, log_eps in (("exact", None), ("acp", -10.0)):

        def fwd():
            return attention_fwd_op(
                q,
                k,
                v,
                g,
                problem.cu_q,
                problem.cu_k,
                bound if log_eps else None,
                None,
                log_eps,
                problem.sm_scale,
                T,
                T,
                True,
                ints,
            )

        out = fwd()
        do = torch.randn_like(q)

        def bwd():
            return attention_bwd_op(
                do, q, k, v, g, out[0], *out[1:], problem.cu_q, problem.cu_k, problem.sm_scale, T, T, True, ints
            )

        rows[f"{mode} fwd op"] = per_call_us(fwd)
        rows[f"{mode} bwd op"] = per_call_us(bwd)
        rows[f"{mode} prepare (scan + plan)"] = per_call_us(
            lambda: prepare(q, k, g, problem, log_eps, bound if log_eps else None, cfg, scale)
        )
        c_t, kc, plan = prepare(q, k, g, problem, log_eps, bound if log_eps else None, cfg, scale)
        qp, kp, vp = packed(q, k, v)
        rows[f"{mode} forward kernel launch"] = per_call_us(
            lambda: _forward(qp, kp, vp, c_t, kc, problem, plan, cfg, scale)
        )
        raw = attention_fwd_op._init_fn  # the Python function behind the op: no dispatcher, no wrappers
        rows[f"{mode} fwd function, no dispatcher"] = per_call_us(
            lambda: raw(q, k, v, g, problem.cu_q, problem.cu_k, bound if log_eps else None, None, log_eps,
                        problem.sm_scale, T, T, True, ints)
        )  # fmt: skip
        gc.disable()
        rows[f"{mode} fwd op, gc off"] = per_call_us(fwd)
        gc.enable()
    rows["_problem"] = per_call_us(lambda: _problem(q, k, problem.cu_q, problem.cu_k, 0.125, T, T, True))
    rows["KernelConfig.from_ints"] = per_call_us(lambda: KernelConfig.from_ints(tuple(ints)))
    rows["packed(q, k, v)"] = per_call_us(lambda: packed(q, k, v))
    qp = packed(q)[0]
    rows["one tensor descriptor"] = per_call_us(lambda: _desc(qp, 64))
    rows["torch.empty"] = per_call_us(lambda: torch.empty(4, device=dev))
    qs, ks, vs = (t.transpose(1, 2).detach().requires_grad_() for t in (q, k, v))

    def sdpa():
        torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True).sum().backward()

    rows["torch SDPA fwd+bwd (autograd, +sum)"] = per_call_us(sdpa)
    print(f"\nhost us per call, {torch.cuda.get_device_name()}, B={B} T={T} H={H} D={D} bf16")
    print("| call | host us |\n|---|---|")
    for name, us in rows.items():
        print(f"| {name} | {us:.1f} |")

    def acp_pair():
        o = attention_fwd_op(
            q, k, v, g, problem.cu_q, problem.cu_k, bound, None, -10.0, problem.sm_scale, T, T, True, ints
        )
        attention_bwd_op(do, q, k, v, g, o[0], *o[1:], problem.cu_q, problem.cu_k, problem.sm_scale, T, T, True, ints)

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(200):
        acp_pair()
    prof.disable()
    torch.cuda.synchronize()
    print("\ncProfile, 200 ACP forward + backward op calls, by self time:")
    pstats.Stats(prof).sort_stats("tottime").print_stats(28)


if __name__ == "__main__":
    main()
