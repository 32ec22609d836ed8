"""The ACP eps guarantee end to end against an independent float64 computation (``float64_reference.dense_f64``,
not foxacp's reference backend), on adversarial inputs the other tests do not combine.

Tolerances: the guarantee is ||o_acp - o_exact|| <= 2 eps max_j ||v_j|| per row (method.md section 2); on top of
that, float32 rounding (~1e-6 relative, 2e-5 absolute for O(1) values) or fp16 rounding (~1e-3).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import foxacp

from .float64_reference import bound_ratio, dense_f64


def _qkv(B, Tq, Tk, Hq, Hkv, D, seed, scale=1.0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, Tq, Hq, D, generator=gen) * scale).to(dtype)
    k = (torch.randn(B, Tk, Hkv, D, generator=gen) * scale).to(dtype)
    v = torch.randn(B, Tk, Hkv, D, generator=gen).to(dtype)
    return q, k, v, gen


def _gates(kind, B, T, H, gen):
    if kind == "fast":
        return F.logsigmoid(-1.0 + torch.randn(B, T, H, generator=gen)).float()
    if kind == "zero":  # never forgets: nothing may be pruned
        return torch.zeros(B, T, H)
    if kind == "m50":  # forgets at once: every row keeps only itself
        return torch.full((B, T, H), -50.0)
    if kind == "sparse_huge":  # mostly f = 1, now and then a gate of -1e4
        return torch.where(torch.rand(B, T, H, generator=gen) < 0.1, -1e4, 0.0).float()
    if kind == "heads":  # a head that never forgets next to one that forgets instantly
        g = torch.zeros(B, T, H)
        g[..., 1::2] = -1e4
        return g
    if kind == "steps":  # f = 1 but one gate of -8 every 7 tokens: decays land around the thresholds
        g = torch.zeros(B, T, H)
        g[:, ::7] = -8.0
        return g
    raise ValueError(kind)


SHAPES = [  # B, Tq, Tk, Hq, Hkv, D: lengths that are no multiple of the 64-wide tiles, GQA, Tq < Tk, Tq = 1
    (1, 1, 1, 2, 1, 16),
    (1, 63, 63, 2, 2, 32),
    (1, 65, 65, 4, 2, 32),
    (2, 129, 129, 2, 1, 64),
    (1, 70, 200, 4, 2, 32),
    (1, 1, 129, 2, 2, 32),
]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("kind", ["fast", "zero", "m50", "sparse_huge", "heads", "steps"])
@pytest.mark.parametrize("shape", SHAPES)
def test_training_op_within_the_eps_bound_of_float64(shape, kind, backend):
    q, k, v, gen = _qkv(*shape, seed=sum(shape), scale=2.0)
    g = _gates(kind, shape[0], shape[2], shape[3], gen)
    exact = dense_f64(q, k, v, g)
    ref = foxacp.forgetting_attention(q.double(), k.double(), v.double(), g, backend="reference", log_eps=None)
    assert (ref - exact).abs().max().item() < 1e-12  # foxacp's reference is the definition
    for log_eps in (-10.0, -3.0, -1.0):
        o = foxacp.forgetting_attention(q, k, v, g, backend=backend, log_eps=log_eps)
        assert bound_ratio(o, exact, v, log_eps) <= 1.0


@pytest.mark.parametrize("qk_bound", ["data", "float", "tensor"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_packed_one_token_documents_and_bound_kinds(backend, qk_bound):
    cu = [0, 1, 2, 65, 66, 130, 200]
    T, Hq, Hkv, D = cu[-1], 4, 2, 32
    q, k, v, gen = _qkv(1, T, T, Hq, Hkv, D, seed=11, scale=1.5)
    g = _gates("steps", 1, T, Hq, gen)
    g[..., 0] = F.logsigmoid(-1.0 + torch.randn(1, T, generator=gen))
    cu_t = torch.tensor(cu, dtype=torch.int32)
    # True max |sm_scale q.k| per head over the call, times 1.001: a valid static bound.
    s = torch.einsum("bihd,bjhd->bhij", q.double(), k.double().repeat_interleave(2, 2)) / math.sqrt(D)
    per_head = s.abs().amax((0, 2, 3)) * 1.001
    bound = {"data": None, "float": float(per_head.max()), "tensor": per_head.float()}[qk_bound]
    exact = dense_f64(q, k, v, g, cu_seqlens=cu)
    for log_eps in (-10.0, -2.0):
        o = foxacp.forgetting_attention(q, k, v, g, cu_seqlens=cu_t, log_eps=log_eps, qk_bound=bound, backend=backend)
        assert bound_ratio(o, exact, v, log_eps, cu_seqlens=cu) <= 1.0


@pytest.mark.parametrize("sm_scale", [2.2e-6, 1e-3, 5e5, 1.1e6])  # near both ends of table_scale's range
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_sm_scale_near_the_table_scale_limits(sm_scale, dtype):
    B, T, H, D = 1, 100, 2, 32
    q, k, v, gen = _qkv(B, T, T, H, 1, D, seed=4, scale=sm_scale**-0.5, dtype=dtype)
    g = _gates("steps", B, T, H, gen)
    g[..., 0] = F.logsigmoid(-1.0 + torch.randn(B, T, generator=gen))
    do = torch.randn(B, T, H, D, generator=gen).to(dtype)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, g)]
    o = foxacp.forgetting_attention(*leaves, sm_scale=sm_scale, backend="triton", log_eps=None)
    o.backward(do)
    refs = [t.double().requires_grad_() for t in (q, k, v, g)]
    exact = dense_f64(*refs, sm_scale=sm_scale)
    exact.backward(do.double())
    tol = 2e-5 if dtype == torch.float32 else 3e-3
    # errors relative to the larger of the reference norm and the quantity's natural scale (test_extreme's rule)
    qd, kd, vd, dod = (t.double() for t in (q, k, v, do))
    vmax, kmax, qmax = (t.norm(dim=-1).max() for t in (vd, kd, qd))
    natural = [vd.norm(), sm_scale * dod.norm() * vmax * kmax, sm_scale * dod.norm() * vmax * qmax, dod.norm(),
               dod.norm() * vmax]  # fmt: skip
    for a, b, n in zip([o, *(t.grad for t in leaves)], [exact, *(t.grad for t in refs)], natural, strict=True):
        assert ((a.double() - b).norm() / max(b.norm(), n)).item() < tol


# ---- decode ops ---------------------------------------------------------------------------------------------


def _dense_cache_f64(q, k, v, c, lens):
    B, Tq, Hq, D = q.shape
    group = Hq // k.shape[2]
    out = torch.zeros(B, Tq, Hq, D, dtype=torch.float64)
    for b in range(B):
        L = int(lens[b])
        for i in range(Tq):
            p = L - Tq + i
            kk = k[b, : p + 1].double().repeat_interleave(group, 1)
            vv = v[b, : p + 1].double().repeat_interleave(group, 1)
            s = torch.einsum("hd,jhd->hj", q[b, i].double(), kk) / math.sqrt(D)
            s = s + (c[b, p].double()[:, None] - c[b, : p + 1].double().t())
            out[b, i] = torch.einsum("hj,jhd->hd", torch.softmax(s, -1), vv)
    return out


DECODE_CASES = [  # B, Tq, Tmax, Hq, Hkv, D, lens
    (2, 1, 200, 4, 4, 32, [1, 200]),
    (2, 16, 300, 8, 1, 32, [16, 300]),  # 128 rows: two row chunks
    (3, 5, 129, 8, 2, 16, [5, 64, 129]),
    (1, 4, 130, 32, 1, 16, [130]),  # a GQA group of 32
    (2, 3, 100, 6, 2, 16, [3, 100]),  # a group of 3 (not a power of two)
]


@pytest.mark.parametrize("rate", ["fast", "heads", "edge"])
@pytest.mark.parametrize("case", DECODE_CASES)
def test_decode_op_backends_and_schedules_within_the_eps_bound(case, rate):
    from foxacp.ops.triton_decode import use_schedule

    B, Tq, Tmax, Hq, Hkv, D, lens = case
    gen = torch.Generator().manual_seed(Tmax + Hq)
    q = torch.randn(B, Tq, Hq, D, generator=gen)
    k, v = (torch.randn(B, Tmax, Hkv, D, generator=gen) for _ in range(2))
    if rate == "fast":
        g = F.logsigmoid(-1.0 + torch.randn(B, Tmax, Hq, generator=gen))
    elif rate == "heads":
        g = torch.cat([torch.zeros(B, Tmax, Hq // 2), torch.full((B, Tmax, Hq - Hq // 2), -1e3)], -1)
    else:  # a gate of -12 at the first key of every 64-key block: block-end decays sit near the threshold
        g = torch.where(torch.arange(Tmax)[None, :, None] % 64 == 0, -12.0, 0.0).expand(B, Tmax, Hq)
    c = g.double().cumsum(1).float()
    lens_t = torch.tensor(lens, dtype=torch.int32)
    exact = _dense_cache_f64(q, k, v, c, lens_t)
    vmax = max(v[b, : lens[b]].abs().max().item() for b in range(B))
    for log_eps in (None, -10.0, -3.0):
        for backend, schedule in (("torch", None), ("triton", "even"), ("triton", "balanced")):
            with use_schedule(schedule):
                o = foxacp.forgetting_attention_with_kvcache(q, k, v, c, lens_t, log_eps=log_eps, backend=backend)
            err = (o.double() - exact).abs().max().item()
            bound = 0.0 if log_eps is None else 2 * math.exp(log_eps) * vmax
            assert err <= bound + 2e-5 * max(1.0, vmax), (backend, schedule, log_eps, err, bound)


# ---- chunked LM head + cross-entropy -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["triton", "torch"])
@pytest.mark.parametrize(
    "N,V,d,dtype,ignore_index,chunk_rows",
    [
        (7, 1, 8, torch.float32, -100, None),  # a one-word vocabulary: loss 0, gradients 0
        (9, 2049, 16, torch.float32, -100, 4),  # one vocabulary entry past a 2048 block
        (12, 4097, 8, torch.float16, -100, 5),  # fp16 through the interpreter's kernels
        (5, 300, 8, torch.float32, 299, 2),  # ignore_index inside the vocabulary
        (6, 50, 8, torch.float32, -100, 100),  # chunk_rows > N
    ],
)
def test_linear_ce_edges_match_float64(path, N, V, d, dtype, ignore_index, chunk_rows, monkeypatch):
    from foxacp.ops import linear_ce

    if path == "torch":
        monkeypatch.setattr(linear_ce, "_use_triton", lambda logits: False)
    gen = torch.Generator().manual_seed(N + V)
    h = torch.randn(N, d, generator=gen).to(dtype)
    w = (torch.randn(V, d, generator=gen) * 0.3).to(dtype)
    labels = torch.randint(0, V, (N,), generator=gen)
    labels[::3] = ignore_index
    grad = torch.randn(N, generator=gen)
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss = linear_ce.linear_cross_entropy(hh, ww, labels, ignore_index=ignore_index, chunk_rows=chunk_rows)
    (loss.double() * grad).sum().backward()
    h64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
    ref = F.cross_entropy(h64 @ w64.T, labels, ignore_index=ignore_index, reduction="none")
    (ref * grad.double()).sum().backward()
    tol = 1e-6 if dtype == torch.float32 else 2e-3
    assert (loss[labels == ignore_index] == 0).all()
    for a, b in ((loss, ref), (hh.grad, h64.grad), (ww.grad, w64.grad)):
        a, b = a.double(), b.detach()
        assert ((a - b).norm() / b.norm().clamp_min(1e-30)).item() < tol or b.norm() == 0 and a.norm() == 0


def test_linear_ce_all_labels_ignored():
    h = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(10, 8, requires_grad=True)
    loss = foxacp.ops.linear_ce.linear_cross_entropy(h, w, torch.full((4,), -100))
    loss.sum().backward()
    assert (loss == 0).all() and (h.grad == 0).all() and (w.grad == 0).all()


# ---- the cumulative gate at long length ---------------------------------------------------------------------


@pytest.mark.parametrize("packed", [False, True])
def test_triton_gate_scan_and_gradient_at_70k_tokens_with_extreme_gates(packed):
    """70001 tokens (69 scan chunks) with -inf resets, gates of -1e4, tiny gates of -1e-30 and f = 1 stretches:
    c against a float64 cumsum per sequence, and the gate gradient against a float64 reverse cumsum."""
    from foxacp.ops.triton_gate import gate_grad, gate_scan
    from foxacp.ops.validate import check_inputs

    T, H = 70001, 2
    gen = torch.Generator().manual_seed(0)
    g = F.logsigmoid(-1 + torch.randn(1, T, H, generator=gen)).float()
    g[0, ::997, 0] = -float("inf")
    g[0, ::1013, 1] = -1e4
    g[0, 5000:5100, 1] = -1e-30
    g[0, 40000:, 0] = 0.0
    cu = torch.tensor([0, 1, 1024, 1025, 33333, T], dtype=torch.int32) if packed else None
    q = torch.zeros(1, T, H, 16)
    problem = check_inputs(q, q, q, g, None, cu, None, None, "triton")
    c, _ = gate_scan(g.reshape(-1, H), problem, 64, 1.0)
    cuts = [0, T] if cu is None else cu.tolist()
    gd = g.reshape(-1, H).double().clamp_min(-1e6)
    want = torch.cat([gd[a:b].cumsum(0) for a, b in zip(cuts, cuts[1:], strict=False)]).t()
    assert (c - want).abs().max().item() <= 1e-15 * want.abs().max().item() * T  # float64 summation order only
    dcq, dck = torch.randn(H, T, generator=gen), torch.randn(H, T, generator=gen)
    dg = gate_grad(dcq, dck, g.reshape(-1, H), problem)
    dc = (dcq - dck).double()
    ref = torch.zeros(T, H, dtype=torch.float64)
    for a, b in zip(cuts, cuts[1:], strict=False):
        ref[a:b] = dc[:, a:b].flip(1).cumsum(1).flip(1).t()
    ref[g.reshape(-1, H) < -1e6] = 0
    assert (dg.double() - ref).abs().max().item() < 1e-6 * ref.abs().max().item() * 10  # float32 output


# ---- the pruned function and its gradient, against an independent plan -------------------------------------


def _pruned_f64(q, k, v, g, log_eps, tile=64):
    """The ACP-pruned function in float64 from a brute-force plan written from method.md: the data bound
    U = max||q|| max||k|| / sqrt(D), delta = -2U - log(Tk) + log_eps, and for each 64-row query tile the key
    tiles whose largest decay c[first row] - c[tile end] is below delta (a prefix) are dropped."""
    B, Tq, Hq, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    grp, sc, off = Hq // Hkv, D**-0.5, Tk - Tq
    qd, kd, vd = q.double(), k.double().repeat_interleave(grp, 2), v.double().repeat_interleave(grp, 2)
    c = g.double().clamp_min(-1e6).cumsum(1)
    qn = q.detach().float().norm(dim=-1).amax(1).double()
    kn = k.detach().float().norm(dim=-1).amax(1).double().repeat_interleave(grp, 1)
    delta = -2 * sc * qn * kn - math.log(Tk) + log_eps
    outs = []
    for b in range(B):
        s = torch.einsum("ihd,jhd->hij", qd[b], kd[b]) * sc + (c[b, off:].t()[:, :, None] - c[b].t()[:, None, :])
        keep = torch.zeros(Hq, Tq, Tk, dtype=torch.bool)
        for h in range(Hq):
            for m0 in range(0, Tq, tile):
                lo = 0
                for n0 in range(0, Tk, tile):
                    if (c[b, m0 + off, h] - c[b, min(n0 + tile, Tk) - 1, h]).item() >= delta[b, h].item():
                        break
                    lo = n0 + tile
                keep[h, m0 : m0 + tile, lo:] = True
        keep &= torch.arange(Tk)[None, :] <= torch.arange(Tq)[:, None] + off
        p = torch.softmax(s.masked_fill(~keep, -math.inf), -1)
        outs.append(torch.einsum("hij,jhd->ihd", p, vd[b]))
    return torch.stack(outs)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(
    "Tq,Tk,Hq,Hkv,kind,log_eps",
    [
        (200, 200, 2, 1, "steps", -3.0),
        (65, 129, 4, 2, "fast", -1.0),
        (1, 257, 2, 2, "sparse_huge", -10.0),
        (129, 129, 2, 2, "heads", -3.0),
    ],  # fmt: skip
)
def test_pruned_function_and_gradients_match_an_independent_plan(Tq, Tk, Hq, Hkv, kind, log_eps, backend):
    q, k, v, gen = _qkv(1, Tq, Tk, Hq, Hkv, 32, seed=Tq + Tk, scale=2.0)
    g = _gates(kind, 1, Tk, Hq, gen)
    do = torch.randn(1, Tq, Hq, 32, generator=gen)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, g)]
    o = foxacp.forgetting_attention(*leaves, backend=backend, log_eps=log_eps)
    o.backward(do)
    refs = [t.double().requires_grad_() for t in (q, k, v, g)]
    ref = _pruned_f64(*refs, log_eps)
    ref.backward(do.double())
    _, stats = foxacp.forgetting_attention(q, k, v, g, backend=backend, log_eps=log_eps, return_stats=True)
    assert stats.flop_saving > 0  # tiles were pruned
    vmax, kmax, qmax = (t.double().norm(dim=-1).max() for t in (v, k, q))
    dn = do.double().norm()
    natural = [v.double().norm(), dn * vmax * kmax / 32**0.5, dn * vmax * qmax / 32**0.5, dn, dn * vmax]
    for a, b, n in zip([o, *(t.grad for t in leaves)], [ref, *(t.grad for t in refs)], natural, strict=True):
        assert ((a.double() - b).norm() / max(b.norm(), n)).item() < 2e-5
