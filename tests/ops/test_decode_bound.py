"""forgetting_attention_with_kvcache with the data-derived bound (qk_bound=None): which blocks it keeps must be
those of U = sm_scale * max_i ||q_i|| * max_j ||k_j|| (../shared/docs/method.md section 2), computed here in
float64 from scratch, and the output must equal a float64 softmax over exactly those keys.

The shipped tests compare the kernel against the twin (which share ``logit_bound``) or use a given qk_bound, and
the eps-bound tests only check the error is small: a bound that is too LARGE (e.g. sm_scale dropped, U x sqrt(D))
prunes less, stays within eps, and loses the FLOP savings unnoticed. Counting kept blocks catches it.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import foxacp

BLOCK = 64  # the decode op's ACP block (../shared/docs/method.md section 6; foxacp.ops.kvcache.DECODE_BLOCK)


def _case():
    B, Tq, Tmax, Hq, Hkv, D = 2, 2, 400, 4, 2, 32
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(B, Tq, Hq, D, generator=gen)
    k = torch.randn(B, Tmax, Hkv, D, generator=gen)
    v = torch.randn(B, Tmax, Hkv, D, generator=gen)
    logf = F.logsigmoid(torch.randn(B, Tmax, Hq, generator=gen) - 1.0)  # ~ -1.3 per token: steep decay
    c = logf.double().cumsum(1).float()
    lens = torch.tensor([400, 250], dtype=torch.int32)
    return q, k, v, c, lens


def _independent_plan(q, k, c, lens, log_eps):
    """first kept block per (b, i, h) and the expected visited count per head, all in float64."""
    B, Tq, Hq, D = q.shape
    group = Hq // k.shape[2]
    first = {}
    visited = [0] * Hq
    for b in range(B):
        L = int(lens[b])
        for h in range(Hq):
            qn = q[b, :, h].double().norm(dim=-1).max()
            kn = k[b, :L, h // group].double().norm(dim=-1).max()
            u = float(qn * kn) / math.sqrt(D)
            delta = -2 * u - math.log(L) + log_eps
            for i in range(Tq):
                p = L - Tq + i
                j = 0
                while j < p // BLOCK and float(c[b, p, h]) - float(c[b, min((j + 1) * BLOCK, L) - 1, h]) < delta:
                    j += 1
                first[(b, i, h)] = j * BLOCK
                visited[h] += p // BLOCK + 1 - j
    return first, visited


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_data_bound_keeps_the_blocks_of_an_independent_float64_plan(backend):
    q, k, v, c, lens = _case()
    log_eps = -10.0
    o, stats = foxacp.forgetting_attention_with_kvcache(
        q, k, v, c, lens, log_eps=log_eps, return_stats=True, backend=backend
    )
    first, visited = _independent_plan(q, k, c, lens, log_eps)
    assert stats.flop_saving > 0.3  # the case prunes: the count below is not vacuous
    assert stats.tiles_visited.tolist() == visited
    B, Tq, Hq, D = q.shape
    group = Hq // k.shape[2]
    for b in range(B):
        L = int(lens[b])
        for i in range(Tq):
            p = L - Tq + i
            for h in range(Hq):
                lo = first[(b, i, h)]
                s = k[b, lo : p + 1, h // group].double() @ q[b, i, h].double() / math.sqrt(D)
                s = s + (c[b, p, h].double() - c[b, lo : p + 1, h].double())
                ref = torch.softmax(s, 0) @ v[b, lo : p + 1, h // group].double()
                torch.testing.assert_close(o[b, i, h].double(), ref, atol=1e-5, rtol=1e-5)
