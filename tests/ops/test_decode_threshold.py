"""The decode ops' ACP threshold, probed to within half a nat: delta = -2U - log(L) + log(eps), with L the
cache length for the dense decode op and L = max_seqlen (L_max) for the paged, evicting op (method.md 2, 6).

The shipped tests draw steep random gates, whose block-end decays lie ~80 nats apart, so a threshold off by a
constant of order 1 (log_eps + 1, a wrong log L) changes no block decision and survives them all (the op and the
cache's eviction share ``paged_threshold``, so they also agree with each other). Here every key before the query
has decay delta + 0.5 (must be kept) or delta - 0.5 (must be pruned); the reference is a float64 softmax written
here over exactly the keys the documented rule keeps.
"""

import math

import pytest
import torch

import foxacp
from foxacp.ops.paged import forgetting_attention_with_paged_kvcache

BLK = 64
T, D, U, LOG_EPS, L_MAX = 192, 16, 1.0, -3.0, 256


def _case(delta, margin):
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(1, 1, 1, D, generator=gen) * 0.3
    k = torch.randn(1, T, 1, D, generator=gen) * 0.3
    v = torch.randn(1, T, 1, D, generator=gen)
    c = torch.zeros(1, T, 1, dtype=torch.float64)
    c[0, T - 1, 0] = delta + margin  # every earlier key (blocks 0 and 1 whole) has decay delta + margin
    return q, k, v, c.float()


def _reference(q, k, v, c, delta):
    p = T - 1
    cq = float(c[0, p, 0])
    keep = []
    for j in range(T):
        end = min((j // BLK + 1) * BLK, T) - 1
        keep.append(j // BLK == p // BLK or cq - float(c[0, end, 0]) >= delta)
    idx = torch.tensor([j for j in range(T) if keep[j]])
    s = k[0, idx, 0].double() @ q[0, 0, 0].double() / math.sqrt(D) + (cq - c[0, idx, 0].double())
    return (torch.softmax(s, 0) @ v[0, idx, 0].double()), int((~torch.tensor(keep)).sum())


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("margin", [0.5, -0.5])
def test_dense_decode_threshold(backend, margin):
    delta = -2 * U - math.log(T) + LOG_EPS
    q, k, v, c = _case(delta, margin)
    lens = torch.tensor([T], dtype=torch.int32)
    o = foxacp.forgetting_attention_with_kvcache(q, k, v, c, lens, qk_bound=U, log_eps=LOG_EPS, backend=backend)
    ref, pruned = _reference(q, k, v, c, delta)
    assert pruned == (0 if margin > 0 else 2 * BLK)
    torch.testing.assert_close(o[0, 0, 0].double(), ref, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("margin", [0.5, -0.5])
def test_paged_decode_threshold_uses_l_max(backend, margin):
    delta = -2 * U - math.log(L_MAX) + LOG_EPS
    q, k, v, c = _case(delta, margin)
    nb = T // BLK
    k_pool, v_pool = k[0, :, 0].reshape(nb, BLK, D).clone(), v[0, :, 0].reshape(nb, BLK, D).clone()
    c_pool = c[0, :, 0].reshape(nb, BLK, 1).clone()
    table = torch.arange(nb, dtype=torch.int32).view(1, 1, nb)
    start = torch.zeros(1, 1, dtype=torch.int32)
    lens = torch.tensor([T], dtype=torch.int32)
    o = forgetting_attention_with_paged_kvcache(
        q, k_pool, v_pool, c_pool, table, start, lens, qk_bound=U, max_seqlen=L_MAX, log_eps=LOG_EPS, backend=backend
    )
    ref, pruned = _reference(q, k, v, c, delta)
    assert pruned == (0 if margin > 0 else 2 * BLK)
    torch.testing.assert_close(o[0, 0, 0].double(), ref, atol=1e-6, rtol=1e-6)
