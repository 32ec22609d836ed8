"""The decode kernel on a GPU: against float64 (the twin on the same mask, and exact attention within the ACP
bound), and one decode step captured in a CUDA graph, whose replay must equal the eager call bit for bit.

    pytest -m gpu tests/ops/test_decode_gpu.py
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import foxacp
from foxacp.ops.kvcache import CacheProblem, cache_attention_torch, cache_threshold, logit_bound

pytestmark = pytest.mark.gpu


def gpu_cache(B, Tq, Tmax, Hq, Hkv, D, lens, dtype, seed=0, device="cuda"):
    """q (B, Tq, Hq, D) and k rows of unit RMS (QK-norm with gains 1: U = sqrt(D)), v standard normal, and c
    of per-head forgetting rates from 1 / 16 to 1 / 4096 nats per token, rebased to each sequence's last key."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def unit_rms(x):
        return x / x.pow(2).mean(-1, keepdim=True).sqrt()

    q = unit_rms(torch.randn(B, Tq, Hq, D, device=device, generator=gen)).to(dtype)
    k = unit_rms(torch.randn(B, Tmax, Hkv, D, device=device, generator=gen)).to(dtype)
    v = torch.randn(B, Tmax, Hkv, D, device=device, generator=gen).to(dtype)
    rates = torch.logspace(math.log10(1 / 16), math.log10(1 / 4096), Hq, device=device, dtype=torch.float64)
    noise = torch.randn(B, Tmax, Hq, device=device, generator=gen, dtype=torch.float64)
    log_f = -rates * torch.exp(0.5 * noise - 0.125)
    c = log_f.cumsum(1)
    lens = torch.tensor(lens, dtype=torch.int32, device=device)
    c = (c - c.gather(1, (lens.long() - 1)[:, None, None].expand(-1, 1, Hq))).float()
    return q, k, v, c, lens


def float64_outputs(q, k, v, c, lens, log_eps, qk_bound):
    """(masked, exact): the twin in float64 on the kernel's ACP mask, and without pruning."""
    B, Tq, Hq, D = q.shape
    problem = CacheProblem(B, Tq, k.shape[1], Hq, k.shape[2], D, 1.0 / math.sqrt(D))
    delta = cache_threshold(logit_bound(q, k, lens, problem, qk_bound), lens, problem, log_eps)
    args = (q.double(), k.double(), v.double(), c, lens)
    return cache_attention_torch(*args, delta, problem), cache_attention_torch(*args, None, problem)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("Hq,Hkv,D", [(24, 24, 64), (32, 8, 128)])
@pytest.mark.parametrize("Tq", [1, 4])
@pytest.mark.parametrize("schedule", ["even", "balanced"])
def test_kernel_against_float64(dtype, Hq, Hkv, D, Tq, schedule, monkeypatch):
    monkeypatch.setattr("foxacp.ops.triton_decode.SCHEDULE", schedule)
    B, Tmax = 3, 17000
    lens = [17000, 4100, Tq]
    q, k, v, c, lens = gpu_cache(B, Tq, Tmax, Hq, Hkv, D, lens, dtype)
    bound = math.sqrt(D)
    masked, exact = float64_outputs(q, k, v, c, lens, -10.0, bound)
    for log_eps, ref in ((None, exact), (-10.0, masked)):
        o, stats = foxacp.forgetting_attention_with_kvcache(
            q, k, v, c, lens, log_eps=log_eps, qk_bound=bound, return_stats=True
        )
        err = (o.double() - ref).norm() / ref.norm()
        assert err < (8e-3 if dtype == torch.bfloat16 else 2e-3), (log_eps, err.item())
        if log_eps is not None:
            assert stats.flop_saving > 0.2
            v_max = v.abs().max().item()
            assert (masked - exact).abs().max().item() <= 2 * math.exp(-10) * v_max


@pytest.mark.parametrize("schedule", ["even", "balanced"])
def test_cuda_graph_replay_equals_eager(schedule, monkeypatch):
    monkeypatch.setattr("foxacp.ops.triton_decode.SCHEDULE", schedule)
    B, Tmax, Hq, Hkv, D = 2, 8192, 32, 8, 128
    q, k, v, c, lens = gpu_cache(B, 1, Tmax, Hq, Hkv, D, [5000, 8000], torch.bfloat16)
    lens -= 1  # the step below appends one token to each sequence
    previous = foxacp.set_value_checks(False)
    try:

        def step():
            return foxacp.forgetting_attention_with_kvcache(q, k, v, c, lens, qk_bound=math.sqrt(D))

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            step()  # compile and allocate outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = step()
        for _ in range(3):  # decode: the cache grows in place, the graph reads the new lengths
            lens += 1
            q.copy_(F.normalize(torch.randn_like(q, dtype=torch.float32), dim=-1).mul(math.sqrt(D)).to(q.dtype))
            graph.replay()
            torch.testing.assert_close(out, step(), atol=0, rtol=0)
    finally:
        foxacp.set_value_checks(previous)
