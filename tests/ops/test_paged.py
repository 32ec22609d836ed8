"""forgetting_attention_with_paged_kvcache: the Triton kernel (interpreter) and the PyTorch twin against a float64
dense computation on a randomly paged cache (shuffled pool blocks, NaN in every slot nothing may read, evicted
blocks), against the dense decode op, and argument validation."""

from __future__ import annotations

import math

import pytest
import torch

from foxacp.ops.kvcache import DECODE_BLOCK, forgetting_attention_with_kvcache
from foxacp.ops.paged import forgetting_attention_with_paged_kvcache

from .test_kvcache import acp_first_key, dense_float64, make_cache

BLK = DECODE_BLOCK


def paginate(k, v, c, lens, starts, spare=3, seed=0):
    """Scatter a dense cache into a shuffled pool: k, v (P, 64, D), c (P, 64, group), table (B, Hkv, nb) int32.

    Logical blocks before starts[b][kvh] are left out (their table entries point at a NaN block); unused pool
    blocks and slots past each length hold NaN. ``spare`` extra NaN blocks make the pool larger than needed.
    """
    B, T, Hkv, D = k.shape
    group = c.shape[2] // Hkv
    nb = -(-T // BLK)
    gen = torch.Generator().manual_seed(seed)
    owners = [(b, h, j) for b in range(B) for h in range(Hkv) for j in range(starts[b][h], -(-int(lens[b]) // BLK))]
    P = len(owners) + spare
    perm = torch.randperm(P, generator=gen)
    kp = torch.full((P, BLK, D), math.nan, dtype=k.dtype)
    vp, cp = kp.clone(), torch.full((P, BLK, group), math.nan)
    table = torch.full((B, Hkv, nb), int(perm[-1]), dtype=torch.int32)  # evicted: a NaN block
    for n, (b, h, j) in enumerate(owners):
        p = int(perm[n])
        table[b, h, j] = p
        keys = slice(j * BLK, min((j + 1) * BLK, int(lens[b])))
        width = keys.stop - keys.start
        kp[p, :width], vp[p, :width] = k[b, keys, h], v[b, keys, h]
        cp[p, :width] = c[b, keys, h * group : (h + 1) * group]
    return kp, vp, cp, table, torch.tensor(starts, dtype=torch.int32)


def threshold(u, Hq, max_len, log_eps):
    return (-2.0 * torch.full((Hq,), u, dtype=torch.float64) - math.log(max_len) + log_eps).float()


CASES = [  # B, Tq, Tmax, Hq, Hkv, D, lens, starts (per row, per KV head)
    (2, 1, 300, 4, 2, 32, [300, 129], [[2, 0], [1, 2]]),
    (3, 3, 200, 4, 4, 16, [3, 200, 70], [[0] * 4, [0, 1, 2, 3], [0, 1, 0, 1]]),
    (2, 20, 256, 8, 2, 32, [256, 100], [[3, 1], [0, 1]]),
]


# The Triton kernel with the even schedule, and with the balanced one at its own grid and at 3 programs per
# group; the PyTorch twin.
KERNELS = [("triton", "even", None), ("triton", "balanced", None), ("triton", "balanced", 3), ("torch", None, None)]


@pytest.mark.parametrize("backend,schedule,splits", KERNELS)
@pytest.mark.parametrize("B,Tq,Tmax,Hq,Hkv,D,lens,starts", CASES)
@pytest.mark.parametrize("log_eps", [None, -3.0])
def test_paged_matches_float64(backend, schedule, splits, B, Tq, Tmax, Hq, Hkv, D, lens, starts, log_eps, monkeypatch):
    from foxacp.ops import triton_paged
    from foxacp.ops.triton_decode import use_schedule

    if splits:
        monkeypatch.setattr(triton_paged, "num_splits", lambda *a: splits)
    q, k, v, c, lens_t, _ = make_cache(B, Tq, Tmax, Hq, Hkv, D, lens, gate_mean=-1.0)
    kp, vp, cp, table, start = paginate(k, v, c, lens_t, starts)
    u, max_len = 1.5, Tmax + 50  # max_len > Tmax: L_max of the threshold is the caller's
    with use_schedule(schedule):
        out = forgetting_attention_with_paged_kvcache(
            q, kp, vp, cp, table, start, lens_t, qk_bound=u, max_seqlen=max_len, log_eps=log_eps, backend=backend
        )
    group = Hq // Hkv
    delta = None if log_eps is None else threshold(u, Hq, max_len, log_eps)[None].expand(B, Hq)
    acp = None if log_eps is None else acp_first_key(c, lens_t, Tq, delta)

    def first_key(b, i, h):
        lo = starts[b][h // group] * BLK
        return lo if acp is None else max(lo, acp(b, i, h))

    ref = dense_float64(q, k, v, c, lens_t, first_key=first_key)
    assert out.shape == q.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, atol=3e-5, rtol=1e-5)
    if log_eps is not None:  # the pruning is real: exact attention differs
        assert (dense_float64(q, k, v, c, lens_t) - ref).abs().max() > 1e-4


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_no_eviction_equals_the_dense_decode_op(backend):
    """With nothing evicted and L_max = the common length, the paged op is the dense op, block for block."""
    B, Tq, Tmax, Hq, Hkv, D = 2, 2, 190, 8, 2, 32
    q, k, v, c, lens, _ = make_cache(B, Tq, Tmax, Hq, Hkv, D, [Tmax, Tmax], gate_mean=-1.0, seed=3)
    kp, vp, cp, table, start = paginate(k, v, c, lens, [[0, 0], [0, 0]])
    args = dict(qk_bound=2.0, log_eps=-4.0, backend=backend)
    paged = forgetting_attention_with_paged_kvcache(q, kp, vp, cp, table, start, lens, max_seqlen=Tmax, **args)
    dense = forgetting_attention_with_kvcache(q, k, v, c, lens, **args)
    torch.testing.assert_close(paged, dense, atol=1e-6, rtol=1e-6)


def test_float64_twin():
    q, k, v, c, lens, _ = make_cache(2, 2, 130, 4, 2, 16, [130, 65], dtype=torch.float64, gate_mean=-1.0)
    kp, vp, cp, table, start = paginate(k, v, c, lens, [[1, 0], [0, 0]])
    out = forgetting_attention_with_paged_kvcache(q, kp, vp, cp, table, start, lens, qk_bound=1.0, log_eps=None)
    ref = dense_float64(q, k, v, c, lens, first_key=lambda b, i, h: BLK if (b, h // 2) == (0, 0) else 0)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)


def test_validation():
    q, k, v, c, lens, _ = make_cache(2, 1, 130, 4, 2, 16, [130, 65])
    kp, vp, cp, table, start = paginate(k, v, c, lens, [[0, 0], [0, 0]])
    args = [q, kp, vp, cp, table, start, lens]

    def call(i, value, match, err=ValueError, **kw):
        bad = list(args)
        bad[i] = value
        with pytest.raises(err, match=match):
            forgetting_attention_with_paged_kvcache(*bad, **{"qk_bound": 1.0, "backend": "torch", **kw})

    call(4, table.long(), "block_table must be int32", TypeError)
    call(2, vp[:, :32], "k_pool and v_pool")
    call(3, cp[..., :1], "c_pool must have shape")
    call(5, torch.tensor([[3, 0], [0, 0]], dtype=torch.int32), "block_start")
    call(6, torch.tensor([130, 200], dtype=torch.int32), "cache_seqlens must lie")
    call(4, torch.full_like(table, 10_000), "outside the pool")
    call(0, q, "max_seqlen", max_seqlen=0)
    call(0, q, "max_seqlen", max_seqlen=130.0)
    # An L_max below a cached length voids the eps bound (a row sums up to L pruned weights, each < eps / L_max).
    call(0, q, r"cache_seqlens must lie in \[Tq, min\(blocks \* 64, max_seqlen\)\] = \[1, 129\]", max_seqlen=129)
    call(0, q, "backend must be", backend="cuda")
    call(0, q, "qk_bound must be a non-negative", TypeError, qk_bound=None)
    call(0, q, "qk_bound must be a float or a tensor of shape", qk_bound=torch.ones(3))
    call(0, q, "qk_bound must be a non-negative", TypeError, qk_bound=True)  # not a bound of 1.0
    call(0, q, "qk_bound must be finite", qk_bound=float("inf"))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("schedule", ["even", "balanced"])
def test_gpu_kernel_against_float64(dtype, schedule):
    from foxacp.ops.triton_decode import use_schedule

    B, Tq, Tmax, Hq, Hkv, D = 3, 2, 3000, 8, 2, 64
    q, k, v, c, lens, _ = make_cache(B, Tq, Tmax, Hq, Hkv, D, [3000, 1234, 65], gate_mean=-2.0, seed=5)
    kp, vp, cp, table, start = paginate(k, v, c, lens, [[20, 3], [0, 19], [0, 0]])
    cuda = [t.cuda() for t in (kp.to(dtype), vp.to(dtype), cp, table, start, lens)]
    q = q.to(dtype).cuda()
    with use_schedule(schedule):
        out = forgetting_attention_with_paged_kvcache(q, *cuda, qk_bound=4.0, log_eps=-6.0)
    pools = [t.double() if t.dtype == dtype else t for t in cuda]  # the same rounded values, in float64
    ref = forgetting_attention_with_paged_kvcache(q.double(), *pools, qk_bound=4.0, log_eps=-6.0, backend="torch")
    torch.testing.assert_close(out.double(), ref, atol=1e-2, rtol=0)  # the output's own rounding
