"""Long-context precision: at 64k tokens c reaches ~-1e5, where a float32 cumulative sum loses the decay."""

import torch
import torch.nn.functional as F

import foxacp

T, H, D, W = 65536, 2, 16, 256  # W: band wide enough that weights outside it are below e^-300


def _banded(q, k, v, c, chunk=2048):
    """Attention restricted to the last W keys of each query, in the precision of the inputs."""
    outs = []
    for a in range(0, T, chunk):
        b, lo = a + chunk, max(0, a - W + 1)
        s = torch.einsum("ihd,jhd->hij", q[a:b], k[lo:b]) / D**0.5 + (c[a:b].t()[:, :, None] - c[lo:b].t()[:, None, :])
        i = torch.arange(a, b)[:, None]
        j = torch.arange(lo, b)[None, :]
        s = s.masked_fill((j > i) | (j <= i - W), -torch.inf)
        outs.append(torch.einsum("hij,jhd->ihd", torch.softmax(s, -1), v[lo:b]))
    return torch.cat(outs)


def test_64k_tokens_torch_path_matches_float64():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, T, H, D, generator=gen) for _ in range(3))
    g = F.logsigmoid(-1.3 + 0.5 * torch.randn(1, T, H, generator=gen)).float()
    c64 = g[0].double().cumsum(0)
    assert c64[-1].max() < -5e4  # the regime where float32 spacing is ~1e-2

    with torch.no_grad():
        o, stats = foxacp.forgetting_attention(q, k, v, g, backend="torch", return_stats=True)
    ref = _banded(q[0].double(), k[0].double(), v[0].double(), c64)
    err = ((o[0].double() - ref).norm() / ref.norm()).item()
    assert stats.flop_saving > 0.9
    assert err < 1e-5, err

    # The same computation from a float32 cumulative sum is visibly wrong: the test can fail.
    naive = _banded(q[0], k[0], v[0], g[0].cumsum(0))
    naive_err = ((naive.double() - ref).norm() / ref.norm()).item()
    print(f"64k tokens: rel err {err:.2e} (float32 cumsum: {naive_err:.2e}), saving {stats.flop_saving:.3f}")
    assert naive_err > 100 * err
