"""forgetting_attention_with_kvcache: the PyTorch twin against a float64 dense computation written here, the
ACP bound, agreement with forgetting_attention on a full cache, and argument validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import foxacp
from foxacp.ops.kvcache import DECODE_BLOCK


def make_cache(B, Tq, Tmax, Hq, Hkv, D, lens, dtype=torch.float32, gate_mean=1.0, seed=0):
    """Random q and a cache (k, v, c) whose slots past each length hold NaN (they must never be read).

    Query heads forget at different rates: log f = logsigmoid(gate_mean + head offset + noise).
    Returns q, k, v, c (float32, non-increasing per sequence), lens (int32), log_fgate (float32).
    """
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Tq, Hq, D, generator=gen).to(dtype)
    k = torch.randn(B, Tmax, Hkv, D, generator=gen).to(dtype)
    v = torch.randn(B, Tmax, Hkv, D, generator=gen).to(dtype)
    offsets = torch.linspace(-3.0, 3.0, Hq)
    log_fgate = F.logsigmoid(gate_mean + offsets + torch.randn(B, Tmax, Hq, generator=gen)).float()
    c = log_fgate.double().cumsum(1).float()
    lens = torch.tensor(lens, dtype=torch.int32)
    unused = torch.arange(Tmax)[None, :] >= lens[:, None].long()
    for t in (k, v, c):
        t[unused] = math.nan
    return q, k, v, c, lens, log_fgate


def dense_float64(q, k, v, c, lens, sm_scale=None, first_key=None):
    """o[b, i, h] = softmax over cached keys j <= p_i of sm_scale q.k + c[p_i] - c[j], in float64, row by row.

    first_key(b, i, h) -> int, when given, drops keys before it (the ACP mask under test)."""
    B, Tq, Hq, D = q.shape
    group = Hq // k.shape[2]
    scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    out = torch.zeros(B, Tq, Hq, D, dtype=torch.float64)
    for b in range(B):
        L = int(lens[b])
        for i in range(Tq):
            p = L - Tq + i
            for h in range(Hq):
                lo = 0 if first_key is None else first_key(b, i, h)
                kh = k[b, lo : p + 1, h // group].double()
                vh = v[b, lo : p + 1, h // group].double()
                s = kh @ q[b, i, h].double() * scale + (c[b, p, h].double() - c[b, lo : p + 1, h].double())
                out[b, i, h] = torch.softmax(s, 0) @ vh
    return out


def acp_first_key(c, lens, Tq, delta):
    """The first kept key of each row: blocks whose last cached key has c[p] - c[end] < delta are dropped."""

    def first_key(b, i, h):
        L = int(lens[b])
        p = L - Tq + i
        for j in range(p // DECODE_BLOCK + 1):
            end = min((j + 1) * DECODE_BLOCK, L) - 1
            if float(c[b, p, h] - c[b, end, h]) >= float(delta[b, h]):
                return j * DECODE_BLOCK
        raise AssertionError("the query's own block must be kept")

    return first_key


def attend(*args, **kwargs):
    return foxacp.forgetting_attention_with_kvcache(*args, **{"backend": "torch", **kwargs})


@pytest.mark.parametrize(
    "B,Tq,Tmax,Hq,Hkv,D,lens",
    [
        (3, 1, 200, 4, 4, 32, [1, 200, 77]),
        (2, 3, 150, 4, 2, 16, [3, 129]),
        (2, 5, 130, 8, 2, 32, [130, 64]),
    ],
)
def test_exact_matches_float64(B, Tq, Tmax, Hq, Hkv, D, lens):
    q, k, v, c, lens, _ = make_cache(B, Tq, Tmax, Hq, Hkv, D, lens)
    o = attend(q, k, v, c, lens, log_eps=None)
    assert o.shape == q.shape and o.dtype == q.dtype
    torch.testing.assert_close(o.double(), dense_float64(q, k, v, c, lens), atol=2e-5, rtol=1e-5)


def test_sm_scale_and_float64_inputs():
    q, k, v, c, lens, _ = make_cache(2, 2, 100, 4, 2, 16, [50, 100], dtype=torch.float64)
    o = attend(q, k, v, c, lens, log_eps=None, sm_scale=0.7)
    assert o.dtype == torch.float64
    torch.testing.assert_close(o, dense_float64(q, k, v, c, lens, sm_scale=0.7), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("qk_bound", [None, 2.0, "per-head"])
def test_acp_mask_and_bound(qk_bound):
    B, Tq, Tmax, Hq, Hkv, D = 3, 3, 300, 4, 2, 32
    q, k, v, c, lens, _ = make_cache(B, Tq, Tmax, Hq, Hkv, D, [300, 3, 190], gate_mean=-1.0)
    log_eps = -4.0  # a loose tolerance, so that pruning moves the output measurably (and within the bound)
    scale = 1.0 / math.sqrt(D)
    if qk_bound is None:
        q_max = q.double().norm(dim=-1).amax(1)
        k_max = torch.stack([k[b, : int(lens[b])].double().norm(dim=-1).amax(0) for b in range(B)])
        u = scale * q_max * k_max.repeat_interleave(Hq // Hkv, dim=1)
        bound = None
    elif qk_bound == "per-head":
        bound = torch.tensor([1.0, 2.0, 3.0, 4.0])
        u = bound.double()[None, :].expand(B, Hq)
    else:
        bound, u = qk_bound, torch.full((B, Hq), qk_bound, dtype=torch.float64)
    delta = (-2 * u - torch.log(lens.double())[:, None] + log_eps).float()

    o, stats = attend(q, k, v, c, lens, log_eps=log_eps, qk_bound=bound, return_stats=True)
    masked = dense_float64(q, k, v, c, lens, first_key=acp_first_key(c, lens, Tq, delta))
    torch.testing.assert_close(o.double(), masked, atol=2e-5, rtol=1e-5)

    exact = dense_float64(q, k, v, c, lens)
    v_max = max(v[b, : int(lens[b])].abs().max().item() for b in range(B))
    assert (o.double() - exact).abs().max().item() <= 2 * math.exp(log_eps) * v_max + 1e-5
    assert 0.0 < stats.flop_saving < 1.0  # this data prunes some blocks but not all
    assert stats.tile_m == 1 and stats.tile_n == DECODE_BLOCK
    assert stats.tiles_visited.shape == (Hq,) and bool((stats.tiles_visited <= stats.tiles_causal).all())


def test_stats_count_causal_blocks():
    q, k, v, c, lens, _ = make_cache(2, 2, 200, 2, 1, 16, [65, 200])
    _, stats = attend(q, k, v, c, lens, log_eps=None, return_stats=True)
    # Positions 63 and 64 (blocks 0 and 1): 1 + 2 blocks; 198 and 199 (block 3): 4 + 4.
    assert stats.tiles_causal.tolist() == [11, 11] and stats.tiles_visited.tolist() == [11, 11]
    assert stats.flop_saving == 0.0


def test_default_tolerance_within_eps_bound():
    q, k, v, c, lens, _ = make_cache(2, 1, 256, 4, 4, 32, [256, 200], gate_mean=-1.0)
    o, stats = attend(q, k, v, c, lens, return_stats=True)  # log_eps = -10, bound from the data
    exact = dense_float64(q, k, v, c, lens)
    assert stats.flop_saving > 0
    assert (o.double() - exact).abs().max().item() <= 2 * math.exp(-10) * 5.0 + 1e-5


def test_rebased_gate_gives_the_same_output():
    q, k, v, c, lens, _ = make_cache(2, 2, 160, 4, 2, 32, [160, 90], gate_mean=-0.5)
    shift = torch.randn(2, 1, 4) * 50.0  # one constant per (sequence, head)
    for log_eps in (None, -10.0):
        o = attend(q, k, v, c, lens, log_eps=log_eps, qk_bound=3.0)
        o_shifted = attend(q, k, v, c - shift, lens, log_eps=log_eps, qk_bound=3.0)
        torch.testing.assert_close(o_shifted, o, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("Tq", [1, 4])
def test_full_cache_equals_forgetting_attention(Tq):
    B, T, Hq, Hkv, D = 2, 150, 4, 2, 32
    q, k, v, c, lens, log_fgate = make_cache(B, Tq, T, Hq, Hkv, D, [T, T])
    o = attend(q, k, v, c, lens, log_eps=None)
    ref = foxacp.forgetting_attention(q, k, v, log_fgate, log_eps=None, backend="reference")
    torch.testing.assert_close(o, ref, atol=2e-5, rtol=1e-5)


def test_strided_inputs():
    q, k, v, c, lens, _ = make_cache(2, 2, 100, 4, 2, 32, [100, 40])
    o = attend(q, k, v, c, lens, qk_bound=2.0)
    q_t = q.transpose(1, 2).contiguous().transpose(1, 2)
    k_big = torch.zeros(2, 100, 2, 64)
    k_big[..., ::2] = k
    o_strided = attend(q_t, k_big[..., ::2], v, c.transpose(1, 2).contiguous().transpose(1, 2), lens, qk_bound=2.0)
    torch.testing.assert_close(o_strided, o, atol=0, rtol=0)


def _retype(args, dtype):
    for name in ("q", "k_cache", "v_cache"):
        args[name] = args[name].to(dtype)


def _narrow(args, head_dim):
    for name in ("q", "k_cache", "v_cache"):
        args[name] = args[name][..., :head_dim]


def _bad_call(change):
    q, k, v, c, lens, _ = make_cache(2, 2, 100, 4, 2, 32, [100, 40])
    args = {"q": q, "k_cache": k, "v_cache": v, "c_cache": c, "cache_seqlens": lens}
    kwargs = {"backend": "torch"}
    change(args, kwargs)
    foxacp.forgetting_attention_with_kvcache(*args.values(), **kwargs)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda a, kw: a.update(q=a["q"].numpy()), TypeError, "q must be a torch.Tensor"),
        (lambda a, kw: a.update(cache_seqlens=[100, 40]), TypeError, "cache_seqlens must be a torch.Tensor"),
        (lambda a, kw: a.update(q=a["q"][0]), ValueError, "q must have 4 dims"),
        (lambda a, kw: a.update(c_cache=a["c_cache"][..., None]), ValueError, "c_cache must have 3 dims"),
        (lambda a, kw: a.update(q=a["q"].half()), TypeError, "k_cache has dtype"),
        (lambda a, kw: a.update(q=a["q"].int()), TypeError, "q must be a floating"),
        (lambda a, kw: a.update(c_cache=a["c_cache"].double()), TypeError, "c_cache must be float32"),
        (lambda a, kw: a.update(cache_seqlens=a["cache_seqlens"].long()), TypeError, "cache_seqlens must be int32"),
        (lambda a, kw: a.update(k_cache=a["k_cache"][:1]), ValueError, "k_cache shape"),
        (lambda a, kw: a.update(v_cache=a["v_cache"][:, :50]), ValueError, "v_cache shape"),
        (
            lambda a, kw: a.update(c_cache=a["c_cache"][:, :, :2]),
            ValueError,
            r"c_cache must have shape \(B, Tmax, Hq\)",
        ),
        (lambda a, kw: a.update(cache_seqlens=a["cache_seqlens"][:1]), ValueError, r"cache_seqlens must have shape"),
        (lambda a, kw: a.update(q=torch.zeros(2, 101, 4, 32)), ValueError, "Tq must be <= Tmax"),
        (lambda a, kw: a.update(q=torch.zeros(2, 2, 3, 32), c_cache=torch.zeros(2, 100, 3)), ValueError, "multiple"),
        (lambda a, kw: a.update(q=torch.zeros(2, 0, 4, 32)), ValueError, "empty input"),
        (lambda a, kw: a.update(cache_seqlens=torch.tensor([100, 1], dtype=torch.int32)), ValueError, r"\[Tq, Tmax\]"),
        (lambda a, kw: a.update(cache_seqlens=torch.tensor([101, 5], dtype=torch.int32)), ValueError, r"\[Tq, Tmax\]"),
        (lambda a, kw: a["c_cache"].__setitem__((1, 3, 0), math.nan), ValueError, "c_cache must be finite"),
        (lambda a, kw: a["c_cache"].__setitem__((0, 50, 1), 5.0), ValueError, "non-increasing"),
        (lambda a, kw: kw.update(backend="cuda"), ValueError, "backend must be"),
        (lambda a, kw: (kw.update(backend="triton"), _retype(a, torch.bfloat16)), TypeError, "bf16"),
        (lambda a, kw: (kw.update(backend="triton"), _retype(a, torch.float64)), TypeError, "float64"),
        (lambda a, kw: (kw.update(backend="triton"), _narrow(a, 24)), ValueError, "head dim 24"),
        (lambda a, kw: kw.update(log_eps=1.0), ValueError, "log_eps"),
        (lambda a, kw: kw.update(sm_scale=-1.0), ValueError, "sm_scale"),
        (lambda a, kw: kw.update(qk_bound=-1.0), ValueError, "qk_bound"),
        (lambda a, kw: kw.update(qk_bound=torch.ones(3)), ValueError, "qk_bound"),
        (lambda a, kw: kw.update(qk_bound="big"), TypeError, "qk_bound"),
    ],
)
def test_bad_input_is_named(change, error, match):
    with pytest.raises(error, match=match):
        _bad_call(change)


def test_value_checks_off_skips_value_checks():
    q, k, v, c, lens, _ = make_cache(1, 1, 100, 2, 2, 16, [100])
    previous = foxacp.set_value_checks(False)
    try:
        c[0, 99, 0] = 1.0  # rising at the last key: only the value check notices
        foxacp.forgetting_attention_with_kvcache(q, k, v, c, lens, backend="torch", log_eps=None)
    finally:
        foxacp.set_value_checks(previous)


# The Triton kernel (under the interpreter on CPU): against the twin (same mask) and float64.
TRITON_CASES = [
    # B, Tq, Tmax, Hq, Hkv, D, lens, splits, dtype
    (3, 1, 200, 4, 4, 32, [1, 200, 77], None, torch.float32),
    (2, 1, 330, 8, 2, 64, [330, 129], 3, torch.float16),
    (2, 3, 250, 4, 2, 32, [3, 250], 5, torch.float32),
    (2, 3, 190, 4, 1, 64, [190, 65], 1, torch.float16),
    (1, 16, 300, 8, 2, 32, [300], 4, torch.float32),  # 64 rows: one full row chunk
    (2, 16, 140, 8, 1, 32, [16, 140], 2, torch.float16),  # 128 rows: two row chunks
]


def _triton(q, k, v, c, lens, log_eps, qk_bound=None, splits=None, schedule=None):
    """The kernel with a chosen number of splits and schedule; also the thresholds (B, Hq) float32 (None when
    exact)."""
    from foxacp.ops.kvcache import cache_threshold, check_cache_inputs, logit_bound
    from foxacp.ops.triton_decode import decode_attention

    problem = check_cache_inputs(q, k, v, c, lens, None, log_eps, "triton")
    acp = delta = None
    if log_eps is not None:
        u = logit_bound(q, k, lens, problem, qk_bound)
        acp, delta = (u, log_eps), cache_threshold(u, lens, problem, log_eps)
    return decode_attention(q, k, v, c, lens, acp, problem, DECODE_BLOCK, splits, schedule=schedule), delta


@pytest.mark.parametrize("B,Tq,Tmax,Hq,Hkv,D,lens,splits,dtype", TRITON_CASES)
@pytest.mark.parametrize("log_eps", [None, math.log(0.9)])
@pytest.mark.parametrize("schedule", ["even", "balanced"])
def test_triton_matches_twin_and_float64(B, Tq, Tmax, Hq, Hkv, D, lens, splits, dtype, log_eps, schedule):
    q, k, v, c, lens, _ = make_cache(B, Tq, Tmax, Hq, Hkv, D, lens, dtype=dtype, gate_mean=2.0, seed=Tmax)
    # Large logits and a false bound of 0 make the pruned blocks carry visible weight: the ACP masks of the
    # kernel, the twin and the reference must then agree block for block.
    q = q * 4
    o, delta = _triton(q, k, v, c, lens, log_eps, qk_bound=0.0, splits=splits, schedule=schedule)
    assert o.dtype == dtype and o.shape == q.shape
    twin = attend(q, k, v, c, lens, log_eps=log_eps, qk_bound=0.0)
    first_key = None if delta is None else acp_first_key(c, lens, Tq, delta)
    ref = dense_float64(q, k, v, c, lens, first_key=first_key)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(o, twin, atol=tol, rtol=tol)
    torch.testing.assert_close(o.double(), ref, atol=tol, rtol=tol)
    if log_eps is not None:
        assert (ref - dense_float64(q, k, v, c, lens)).abs().max() > 5 * tol


@pytest.mark.parametrize("qk_bound", [None, 2.0, torch.tensor([0.5, 1.0, 2.0, 3.0])])
def test_triton_through_the_public_function(qk_bound):
    q, k, v, c, lens, _ = make_cache(2, 2, 150, 4, 2, 32, [150, 70], gate_mean=-1.0)
    kwargs = {"qk_bound": qk_bound, "return_stats": True, "log_eps": -5.0}
    o, stats = foxacp.forgetting_attention_with_kvcache(q, k, v, c, lens, backend="triton", **kwargs)
    twin, twin_stats = attend(q, k, v, c, lens, **kwargs)
    torch.testing.assert_close(o, twin, atol=1e-5, rtol=1e-5)
    assert stats.tiles_visited.tolist() == twin_stats.tiles_visited.tolist()
    assert stats.flop_saving > 0


@pytest.mark.parametrize("schedule", ["even", "balanced"])
def test_triton_splits_wholly_pruned_and_pruned_blocks_never_read(schedule):
    # One row per program (Tq 1, no GQA): blocks before the row's start are never loaded, so NaN there cannot
    # reach the output. 16 splits share the few kept blocks: most splits get none and write neutral partials.
    B, Tmax, H, D = 2, 640, 2, 32
    q, k, v, c, lens, _ = make_cache(B, 1, Tmax, H, H, D, [640, 600], gate_mean=-2.0)
    clean, delta = _triton(q, k, v, c, lens, -10.0, qk_bound=1.0, splits=16, schedule=schedule)
    kept_starts = []
    for b in range(B):
        for h in range(H):
            start = acp_first_key(c, lens, 1, delta)(b, 0, h)
            kept_starts.append(start)
            k[b, :start, h] = math.nan
            v[b, :start, h] = math.nan
    assert max(kept_starts) >= 8 * DECODE_BLOCK  # every row prunes most of its blocks
    o, _ = _triton(q, k, v, c, lens, -10.0, qk_bound=1.0, splits=16, schedule=schedule)
    torch.testing.assert_close(o, clean, atol=0, rtol=0)
    first_key = acp_first_key(c, lens, 1, delta)
    torch.testing.assert_close(o.double(), dense_float64(q, k, v, c, lens, first_key=first_key), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("schedule", ["even", "balanced"])
def test_triton_strided_cache_read_in_place(schedule):
    q, k, v, c, lens, _ = make_cache(2, 3, 130, 4, 2, 32, [130, 64])
    o, _ = _triton(q, k, v, c, lens, None, splits=2, schedule=schedule)
    big = torch.full((2, 130, 4, 32), math.nan)  # a cache with room for more heads, of which we use two
    big[:, :, 1::2] = k
    c_t = c.transpose(1, 2).contiguous().transpose(1, 2)
    o_strided, _ = _triton(q, k=big[:, :, 1::2], v=v, c=c_t, lens=lens, log_eps=None, splits=2, schedule=schedule)
    torch.testing.assert_close(o_strided, o, atol=0, rtol=0)


@pytest.mark.parametrize("Tmax,lens", [(4500, [4500, 1000, 70]), (262200, [262200, 70000, 4200])])
@pytest.mark.parametrize("schedule", ["even", "balanced"])
def test_triton_start_search_over_two_and_three_levels(Tmax, lens, schedule):
    # 71 blocks take a 2-level search, 4097 blocks a 3-level one. Heads forget fast enough that a few blocks
    # are kept; the kernel and the twin must agree, with large logits and a false bound of 0 (see above).
    B, Hq, Hkv, D = 3, 4, 2, 16
    gen = torch.Generator().manual_seed(Tmax)
    q = torch.randn(B, 2, Hq, D, generator=gen) * 4
    k = torch.randn(B, Tmax, Hkv, D, generator=gen)
    v = torch.randn(B, Tmax, Hkv, D, generator=gen)
    rates = torch.tensor([0.05, 0.1, 0.2, 0.4])
    c = (-rates * torch.rand(B, Tmax, Hq, generator=gen) * 2).double().cumsum(1).float()
    lens = torch.tensor(lens, dtype=torch.int32)
    o, delta = _triton(q, k, v, c, lens, -0.1, qk_bound=0.0, splits=3, schedule=schedule)
    twin, stats = attend(q, k, v, c, lens, log_eps=-0.1, qk_bound=0.0, return_stats=True)
    assert stats.flop_saving > 0.9
    torch.testing.assert_close(o, twin, atol=1e-5, rtol=1e-5)


def test_triton_balanced_schedule_gives_the_long_group_many_splits():
    # One head keeps its whole 12k-key cache, the other a few blocks: the balanced schedule hands nearly all of
    # 40 programs to the first, whose row then merges more partials than one combine step takes (32).
    from foxacp.ops.triton_balance import COMBINE_SPLITS

    B, Tmax, H, D = 1, 12000, 2, 16
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(B, 1, H, D, generator=gen)
    k, v = (torch.randn(B, Tmax, H, D, generator=gen) for _ in range(2))
    rates = torch.tensor([0.0, 1.0])  # head 0 never forgets, head 1 forgets at once
    c = (-rates * torch.rand(B, Tmax, H, generator=gen)).double().cumsum(1).float()
    lens = torch.tensor([Tmax], dtype=torch.int32)
    splits = 20  # x 2 groups = 40 programs
    assert 2 * splits > COMBINE_SPLITS + 2
    o, _ = _triton(q, k, v, c, lens, -10.0, qk_bound=1.0, splits=splits, schedule="balanced")
    even, _ = _triton(q, k, v, c, lens, -10.0, qk_bound=1.0, splits=splits, schedule="even")
    twin = attend(q, k, v, c, lens, log_eps=-10.0, qk_bound=1.0)
    torch.testing.assert_close(o, twin, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(o, even, atol=1e-5, rtol=1e-5)


def test_triton_balanced_schedule_at_a_batch_that_fills_the_gpu():
    # 20 groups fill the interpreter's 4 x 4 program slots: the even schedule takes one split each, the balanced
    # one still shares a GPU's worth of extra programs out by kept blocks (ragged lengths, ACP).
    from foxacp.ops.triton_decode import balanced_programs

    B, Hq, Hkv, D = 5, 8, 4, 16
    assert balanced_programs(B * Hkv, 900, torch.device("cpu"), DECODE_BLOCK, None) > B * Hkv
    q, k, v, c, lens, _ = make_cache(B, 1, 900, Hq, Hkv, D, [900, 1, 640, 65, 300], gate_mean=1.0, seed=9)
    o, delta = _triton(q * 4, k, v, c, lens, -2.0, qk_bound=0.0, schedule="balanced")
    twin = attend(q * 4, k, v, c, lens, log_eps=-2.0, qk_bound=0.0)
    torch.testing.assert_close(o, twin, atol=1e-5, rtol=1e-5)


def test_unknown_schedule_is_refused():
    q, k, v, c, lens, _ = make_cache(1, 1, 64, 2, 2, 16, [64])
    with pytest.raises(ValueError, match="schedule"):
        _triton(q, k, v, c, lens, None, schedule="fast")
    from foxacp.ops.triton_decode import use_schedule

    with pytest.raises(ValueError, match="schedule"), use_schedule("fast"):
        pass
