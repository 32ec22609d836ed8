"""Forward and backward must prune the same entries (../shared/docs/method.md section 2, last paragraph): the
gradient is the gradient of the function actually computed.

With the data-derived bound (every shipped ACP gradient test) the pruned weights are ~e^-40 in practice, so a
dK/dV kernel that ignores the mirror pointer Q_HI (visits every query block) gives the same numbers and
survives. A small given qk_bound (0 here: legal, >= 0) makes pruned entries carry visible weight; the op's output
and all four gradients must then match float64 autograd through the pruned function, whose plan is computed
here from scratch (64 x 64 tiles, the CPU grid: ops/config.py _CPU).
"""

import math

import pytest
import torch
import torch.nn.functional as F

import foxacp

TILE = 64


def _pruned_f64(q, k, v, g, u, log_eps):
    B, Tq, Hq, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    grp, sc, off = Hq // Hkv, D**-0.5, Tk - Tq
    kd, vd = k.repeat_interleave(grp, 2), v.repeat_interleave(grp, 2)
    c = g.cumsum(1)
    delta = -2 * u - math.log(Tk) + log_eps
    outs, pruned = [], 0
    for b in range(B):
        s = torch.einsum("ihd,jhd->hij", q[b], kd[b]) * sc + (c[b, off:].t()[:, :, None] - c[b].t()[:, None, :])
        keep = torch.zeros(Hq, Tq, Tk, dtype=torch.bool)
        for h in range(Hq):
            for m0 in range(0, Tq, TILE):
                lo = 0
                for n0 in range(0, Tk, TILE):
                    if (c[b, m0 + off, h] - c[b, min(n0 + TILE, Tk) - 1, h]).item() >= delta:
                        break
                    lo = n0 + TILE
                keep[h, m0 : m0 + TILE, lo:] = True
                pruned += lo
        keep &= torch.arange(Tk)[None, :] <= torch.arange(Tq)[:, None] + off
        p = torch.softmax(s.masked_fill(~keep, -math.inf), -1)
        outs.append(torch.einsum("hij,jhd->ihd", p, vd[b]))
    return torch.stack(outs), pruned


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("Tq,Tk,Hq,Hkv", [(200, 200, 2, 1), (130, 260, 4, 2)])
def test_small_given_bound_gradients_are_those_of_the_pruned_function(backend, Tq, Tk, Hq, Hkv):
    D, log_eps, u = 32, -0.5, 0.0
    gen = torch.Generator().manual_seed(11)
    q = torch.randn(1, Tq, Hq, D, generator=gen)
    k = torch.randn(1, Tk, Hkv, D, generator=gen)
    v = torch.randn(1, Tk, Hkv, D, generator=gen)
    g = F.logsigmoid(torch.randn(1, Tk, Hq, generator=gen) * 0.3 + 2.0)  # ~ -0.13 per token, ~8 nats a tile
    do = torch.randn(1, Tq, Hq, D, generator=gen)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, g)]
    o = foxacp.forgetting_attention(*leaves, backend=backend, log_eps=log_eps, qk_bound=u)
    o.backward(do)
    refs = [t.double().requires_grad_() for t in (q, k, v, g)]
    ref, pruned = _pruned_f64(*refs, u, log_eps)
    ref.backward(do.double())
    assert pruned > 0
    # the pruning is visible: exact attention differs from the pruned function
    exact, _ = _pruned_f64(*(t.detach() for t in refs), 1e9, log_eps)
    assert (exact - ref.detach()).abs().max() > 1e-4
    got, want = [o, *(t.grad for t in leaves)], [ref, *(t.grad for t in refs)]
    for name, a, b in zip(["o", "dq", "dk", "dv", "dg"], got, want, strict=True):
        err = ((a.double() - b).norm() / b.norm()).item()
        assert err < 2e-5, (name, err)
