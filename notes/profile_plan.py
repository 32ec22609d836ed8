"""Kernel-level profile of the ACP forward and of the boundary search alone (4k and 16k, 24 heads of 64)."""

import torch

import foxacp
from foxacp.bench.gates import synthetic_log_fgate  # noqa: F401  (imported to check the module)
from foxacp.ops import attention as api
from foxacp.ops.gate import cumulative_gate
from foxacp.ops.validate import check_inputs

H, D = 24, 64
for T in (4096, 16384):
    B = 32768 // T
    q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    g = torch.nn.functional.logsigmoid(torch.linspace(-1, 8, H, device="cuda") + torch.randn(B, T, H, device="cuda"))
    problem = check_inputs(q, k, v, g, None, None, None, -10.0, "triton")
    qp, kp = q.reshape(-1, H, D), k.reshape(-1, H, D)
    c_t = cumulative_gate(g.reshape(-1, H), problem.cu_k, True, B)
    search = lambda: api._plan(qp, kp, c_t, problem, -10.0, None, 128, 128)  # noqa: E731
    fwd = lambda: foxacp.forgetting_attention(q, k, v, g)  # noqa: E731
    for name, fn in (("search", search), ("acp fwd", fwd)):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(5):
                fn()
            torch.cuda.synchronize()
        print(f"== T={T} {name}")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=10, max_name_column_width=36))
