"""The split-KV decode kernel on a cache whose one sequence spans more than 2^31 elements (a strided or
layer-interleaved layout: the op takes any strides): its offsets within a sequence are 64-bit (they wrapped).

The storage is allocated with torch.empty and left mostly untouched, so it costs a few MiB of real memory.
The view starts 2^31 elements into its storage, so that a wrapped (negative) 32-bit offset still lands
inside the allocation (it reads zeros there instead of segfaulting)."""

from __future__ import annotations

import math

import pytest
import torch

import foxacp
from foxacp.ops import triton_decode

S = 1 << 20  # elements between consecutive cached positions
TMAX, D = 2112, 16  # 33 blocks; keys 2048.. sit more than 2^31 elements past the sequence's base
PAD = 1 << 31


def _strided_cache():
    store = torch.empty(PAD + TMAX * S, dtype=torch.float16)  # lazily backed: untouched pages cost nothing
    k = store.as_strided((1, TMAX, 1, D), (TMAX * S, S, D, 1), PAD)
    v = store.as_strided((1, TMAX, 1, D), (TMAX * S, S, D, 1), PAD + D)  # same rows, next D elements
    gen = torch.Generator().manual_seed(0)
    k[0, :, 0] = torch.randn(TMAX, D, generator=gen).half()
    v[0, :, 0] = torch.randn(TMAX, D, generator=gen).half()
    q = torch.randn(1, 1, 1, D, generator=gen).half()
    # log f = -1 per token: the output is dominated by the last few keys (all past 2^31 elements)
    c = -torch.arange(TMAX, dtype=torch.float32).view(1, TMAX, 1)
    lens = torch.tensor([TMAX], dtype=torch.int32)
    return store, q, k, v, c, lens


def _dense64(q, k, v, c):
    kd, vd = k[0, :, 0].double(), v[0, :, 0].double()
    s = kd @ q[0, 0, 0].double() / math.sqrt(D) + (c[0, -1, 0].double() - c[0, :, 0].double())
    return torch.softmax(s, 0) @ vd


@pytest.mark.skipif(torch.cuda.is_available(), reason="lazily backed host storage, through the interpreter")
@pytest.mark.parametrize("schedule", ["even", "balanced"])
@pytest.mark.parametrize("log_eps", [None, -10.0])
def test_decode_reads_a_cache_past_2_31_elements(schedule, log_eps):
    store, q, k, v, c, lens = _strided_cache()
    ref = _dense64(q, k, v, c)
    u = float(q.double().norm() * k[0, :, 0].double().norm(dim=-1).max() / math.sqrt(D))  # a true logit bound
    twin = foxacp.forgetting_attention_with_kvcache(q, k, v, c, lens, log_eps=log_eps, qk_bound=u, backend="torch")
    assert (twin[0, 0, 0].double() - ref).abs().max() < 5e-3  # the twin is right
    with triton_decode.use_schedule(schedule):
        o = foxacp.forgetting_attention_with_kvcache(q, k, v, c, lens, log_eps=log_eps, qk_bound=u, backend="triton")
    err = (o[0, 0, 0].double() - ref).abs().max().item()
    assert err < 5e-3, f"max |triton - float64| = {err:.4f} (|ref| max {ref.abs().max().item():.3f})"
