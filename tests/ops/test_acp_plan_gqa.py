"""The training op's ACP plan against a brute-force float64 plan written here, with grouped-query attention
(kv heads of very different key norms) and packed variable-length sequences.

The shipped brute-force test (test_acp.py::test_boundaries_match_brute_force_and_mirror) uses Hq == Hkv and a
uniform batch, and every backend-vs-reference test runs the reference with foxacp's own plan, so a wrong
per-query-head bound under GQA (k norms taken from kv head h % Hkv instead of h // group) or a wrong packed
threshold (acp.threshold's non-uniform branch) leaves every comparison consistent.
"""

import math

import pytest
import torch

from foxacp.ops.search import make_plan


def _brute(c, rows, ends, delta):
    out = []
    for r in rows:
        n = 0
        while n < len(ends) and c[r] - c[ends[n]] < delta:
            n += 1
        out.append(n)
    return out


def _inputs(T, Hq, Hkv, D, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, T, Hq, D, generator=gen)
    k = torch.randn(1, T, Hkv, D, generator=gen)
    k[..., 0, :] *= 4.0  # kv head 0: keys 4x longer than kv head 1's
    g = torch.nn.functional.logsigmoid(torch.randn(1, T, Hq, generator=gen) * 0.5 + 0.0).float()
    return q, k, g


@pytest.mark.parametrize("packed", [False, True])
def test_plan_matches_brute_force_with_gqa_and_packing(packed):
    Hq, Hkv, D, tm, tn = 4, 2, 16, 32, 16
    group = Hq // Hkv
    cu = [0, 150, 333, 420] if packed else [0, 420]
    T = cu[-1]
    q, k, g = _inputs(T, Hq, Hkv, D, seed=3)
    kwargs = {"tile_m": tm, "tile_n": tn, "log_eps": -10.0}
    if packed:
        kwargs.update(
            cu_seqlens=torch.tensor(cu, dtype=torch.int32),
            max_seqlen=max(b - a for a, b in zip(cu[:-1], cu[1:], strict=True)),
        )
    plan = make_plan(q, k, g, **kwargs)
    pruned_any = False
    for n, (a, e) in enumerate(zip(cu[:-1], cu[1:], strict=True)):
        L = e - a
        c = g[0, a:e].double().cumsum(0)  # (L, Hq), restarting at the sequence start
        ends = [min(x, L) - 1 for x in range(tn, L + tn, tn)]
        rows = [m * tm for m in range(math.ceil(L / tm))]
        for h in range(Hq):
            qn = q[0, a:e, h].double().norm(dim=-1).max()
            kn = k[0, a:e, h // group].double().norm(dim=-1).max()
            u = float(qn * kn) / math.sqrt(D)
            delta = -2 * u - math.log(L) - 10.0
            want = _brute(c[:, h], rows, ends, delta)
            got = plan.kv_lo[n, h, : len(rows)].tolist()
            assert got == want, (n, h)
            pruned_any |= any(w > 0 for w in want)
    assert pruned_any  # the case prunes: the comparison is not vacuous
