"""Where the time goes in one forgetting_attention call outside the kernels (torch.profiler)."""

import time

import torch
import torch.nn.functional as F

import foxacp

H, D, T, B = 24, 64, 8192, 4
q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
g = F.logsigmoid(torch.linspace(-1, 8, H, device="cuda") + torch.randn(B, T, H, device="cuda")).float()
for eps in (None, -10.0):
    for _ in range(3):
        foxacp.forgetting_attention(q, k, v, g, log_eps=eps)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        foxacp.forgetting_attention(q, k, v, g, log_eps=eps)
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    print(f"log_eps={eps}: host time per call {(t1 - t0) / 20 * 1e3:.3f} ms, wall {(time.perf_counter() - t0) / 20 * 1e3:.3f}")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
        foxacp.forgetting_attention(q, k, v, g, log_eps=eps)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=40))
