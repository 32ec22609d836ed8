"""Regressions of a numerics review (each failed before its fix): fp16 ranges in the backward and the chunked loss,
garbage past cache lengths, strided labels, the GPU data bound's strides and head dims, paged max_seqlen.

Ground truth is ``float64_reference.dense_f64`` (float64, written from ../shared/docs/method.md, independent of foxacp).
Under the CPU interpreter (TRITON_INTERPRET=1, set by tests/conftest.py) the Triton kernels run as on a GPU.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import foxacp

from .float64_reference import dense_f64

# --------------------------------------------------------------------------------------------------------------
# 1. fp16 backward of the Triton training kernels overflows in dS although every true gradient fits in fp16.
# --------------------------------------------------------------------------------------------------------------


def test_triton_fp16_backward_keeps_loss_scaled_gradients_finite():
    """A loss-scaled fp16 step (GradScaler's default scale is 2^16; here dO ~ 12288 * N(0, 1)): the true dq, dk, dv
    peak at ~2.5e4, ~3.3e4 and ~4.7e4, below fp16's max 65504, and backend="torch" returns them, but the Triton
    backward casts dS = P * (dP - Delta) to fp16 *before* multiplying by sm_scale (and by k or q), so dS
    (~1/sm_scale = 8x larger than dq) overflows to inf and dq, dk come back as inf."""
    B, T, H, D = 1, 65, 2, 64
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(B, T, H, D, generator=gen).half() for _ in range(3))
    g = F.logsigmoid(3.0 + torch.randn(B, T, H, generator=torch.Generator().manual_seed(8))).float()
    do = (torch.randn(B, T, H, D, generator=gen) * 12288).half()

    refs = [t.double().requires_grad_() for t in (q, k, v, g)]
    dense_f64(*refs).backward(do.double())
    ref_grads = [t.grad for t in refs]
    assert max(x.abs().max().item() for x in ref_grads[:3]) < 60000  # every true gradient is representable

    for backend in ("torch", "triton"):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, g)]
        foxacp.forgetting_attention(*leaves, backend=backend, log_eps=None).backward(do)
        for name, a, b in zip(("dq", "dk", "dv"), leaves[:3], ref_grads[:3], strict=True):
            finite = bool(torch.isfinite(a.grad).all())
            assert finite, f"{backend}: {name} has inf/NaN (true max |{name}| = {b.abs().max().item():.1f})"
            err = ((a.grad.double() - b).norm() / b.norm()).item()
            assert err < 1e-2, f"{backend}: {name} relative error {err:.2e}"


# --------------------------------------------------------------------------------------------------------------
# 2. The paged decode op takes a max_seqlen below the cached length silently, and its eps guarantee breaks.
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_paged_max_seqlen_below_the_cached_length_is_refused(backend):
    """delta = -2U - log(max_seqlen) + log_eps bounds what a row drops only when max_seqlen >= its length L (each
    pruned weight < eps / L_max, summed over <= L keys). Here max_seqlen = 1 against 640 cached keys dropped 31% of
    the row's mass where eps = e^-3 = 5%: it is refused (value checks are on), as is one below Tq; with the true
    L_max the output stays within the bound.

    Inputs: one sequence of 640 keys (10 pool blocks), q = 0 (every logit 0, so qk_bound = 0 is a true bound),
    c = 3.01 on keys 0..575 and 0 on keys 576..639 (one gate of -3.01), v = +1 on the old keys, -1 on the new.
    Exact: o = (576 e^-3.01 - 64) / (576 e^-3.01 + 64) = -0.385; pruned (blocks 0-8 dropped): o = -1."""
    B, L, D, blk = 1, 640, 16, 64
    nb = L // blk
    q = torch.zeros(B, 1, 1, D)
    k_dense = torch.randn(L, D, generator=torch.Generator().manual_seed(0))
    v_dense = torch.where(torch.arange(L)[:, None] < 576, 1.0, -1.0).expand(L, D).contiguous()
    c_dense = torch.where(torch.arange(L) < 576, 3.01, 0.0)
    k_pool, v_pool = k_dense.view(nb, blk, D), v_dense.view(nb, blk, D)
    c_pool = c_dense.view(nb, blk, 1).contiguous()
    table = torch.arange(nb, dtype=torch.int32).view(1, 1, nb)
    start = torch.zeros(1, 1, dtype=torch.int32)
    lens = torch.tensor([L], dtype=torch.int32)
    log_eps = -3.0
    gates = torch.zeros(1, L, 1)
    gates[0, 576, 0] = -3.01
    exact = dense_f64(q, k_dense.view(1, L, 1, D), v_dense.view(1, L, 1, D), gates)

    def call(max_seqlen):
        return foxacp.ops.forgetting_attention_with_paged_kvcache(
            q, k_pool, v_pool, c_pool, table, start, lens, qk_bound=0.0, max_seqlen=max_seqlen, log_eps=log_eps,
            backend=backend,
        )  # fmt: skip

    with pytest.raises(ValueError, match="cache_seqlens must lie"):
        call(L - 1)
    with pytest.raises(ValueError, match="max_seqlen must be an int >= Tq"):
        call(0)
    err = (call(L).double() - exact).abs().max().item()
    assert err <= 2 * math.exp(log_eps) * 1.0  # max_j |v_j| = 1


# --------------------------------------------------------------------------------------------------------------
# 3. linear_cross_entropy rounds each chunk's weight-gradient product to fp16 before the float32 accumulation.
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_triton", [True, False])
def test_linear_ce_fp16_weight_grad_survives_chunk_partials_past_fp16(use_triton, monkeypatch):
    """fp16 hidden and weight (no autocast; the interpreter's Triton CE path and the PyTorch path alike): the
    weight gradient is sum_chunks (dlogits_chunk^T @ h_chunk), and each chunk's product is formed in fp16
    (linear_ce.py ``dw += dlogits.T @ h``), so a chunk partial beyond 65504 becomes inf even when the total
    is small. The full-logits reference (one fp16 GEMM over all rows, float32 accumulation inside) and
    float64 both give dweight = 0 here; the chunked op gives inf - inf = NaN.

    Inputs: N = 8 rows in 2 chunks of 4, d = 1, V = 2, weight = 0 (uniform softmax), labels all 0,
    hidden = +100 for rows 0-3 and -100 for rows 4-7, per-row loss gradient 400 (a loss-scaled step).
    Each chunk's dweight partial is -/+0.5 * 400 * 4 * 100 = -/+80000."""
    from foxacp.ops import linear_ce

    if not use_triton:
        monkeypatch.setattr(linear_ce, "_use_triton", lambda logits: False)
    hidden = torch.tensor([[100.0]] * 4 + [[-100.0]] * 4).half().requires_grad_()
    weight = torch.zeros(2, 1).half().requires_grad_()
    labels = torch.zeros(8, dtype=torch.long)
    grad = torch.full((8,), 400.0)

    loss = linear_ce.linear_cross_entropy(hidden, weight, labels, chunk_rows=4)
    (loss * grad).sum().backward()

    h64 = hidden.detach().double().requires_grad_()
    w64 = weight.detach().double().requires_grad_()
    (F.cross_entropy(h64 @ w64.T, labels, reduction="none") * grad.double()).sum().backward()
    assert w64.grad.abs().max().item() == 0.0
    got = weight.grad.float()
    assert bool(torch.isfinite(got).all()), (
        f"dweight = {got.flatten().tolist()} (float64: {w64.grad.flatten().tolist()})"
    )
    assert got.abs().max().item() < 1.0


# --------------------------------------------------------------------------------------------------------------
# 4. The differentiable decode path reads the keys past each cache length in its backward: NaN dq.
# --------------------------------------------------------------------------------------------------------------


GARBAGE = math.nan  # what the slots past the lengths hold (0.0 makes both tests below pass)


def _cache_with_garbage_past_the_lengths():
    """B = 2 sequences in a 130-slot cache, lengths [130, 70]; slots past a length hold NaN (garbage the decode
    ops promise never to read: kvcache.cache_attention_torch "Keys past each sequence's length are never used
    (their values may be garbage)"; triton_paged "past the length the block holds stale keys ... or garbage")."""
    gen = torch.Generator().manual_seed(0)
    B, Tmax, H, D = 2, 130, 2, 16
    q = torch.randn(B, 1, H, D, generator=gen)
    k, v = (torch.randn(B, Tmax, H, D, generator=gen) for _ in range(2))
    c = F.logsigmoid(2 + torch.randn(B, Tmax, H, generator=gen)).double().cumsum(1).float()
    lens = torch.tensor([130, 70], dtype=torch.int32)
    clean = [t.clone() for t in (k, v, c)]
    for t in (k, v):
        t[1, 70:] = GARBAGE
    c[1, 70:] = c[1, 69] if GARBAGE == 0.0 else GARBAGE
    return q, k, v, c, lens, clean


def test_kvcache_backward_ignores_garbage_past_the_lengths():
    """forgetting_attention_with_kvcache with q requiring grad (backend None picks the PyTorch twin, as the docs
    say). The forward ignores the NaN slots (masked_fill of the scores), but the backward of
    einsum(q, k_all) multiplies the zero score-gradients of those slots by their NaN keys: dq of sequence 1 is
    NaN. Expected: dq equal to the gradient with those slots zeroed (finite, ~float64 autograd)."""
    q, k, v, c, lens, (k0, v0, c0) = _cache_with_garbage_past_the_lengths()
    k0[1, 70:], v0[1, 70:], c0[1, 70:] = 0.0, 0.0, c0[1, 69]
    grads = []
    for kk, vv, cc in ((k0, v0, c0), (k, v, c)):
        qq = q.clone().requires_grad_()
        o = foxacp.forgetting_attention_with_kvcache(qq, kk, vv, cc, lens, log_eps=None)
        assert bool(torch.isfinite(o).all())
        o.sum().backward()
        grads.append(qq.grad)
    clean_dq, dq = grads
    assert bool(torch.isfinite(clean_dq).all())
    assert bool(torch.isfinite(dq).all()), f"dq of sequence 1 = {dq[1].flatten()[:4].tolist()} ..."
    torch.testing.assert_close(dq, clean_dq, atol=1e-6, rtol=1e-6)


def test_paged_backward_ignores_garbage_past_the_lengths():
    """The same through forgetting_attention_with_paged_kvcache (its PyTorch twin gathers the pool densely and
    runs the same cache_attention_torch): NaN in the pool slots past sequence 1's length gives NaN dq."""
    q, k, v, c, lens, _ = _cache_with_garbage_past_the_lengths()
    B, Tmax, H, D = k.shape
    nb = -(-Tmax // 64)
    # One pool block per (sequence, head, logical block); slots past a length keep the NaN garbage.
    k_pool = torch.full((B * H * nb, 64, D), GARBAGE)
    v_pool, c_pool = k_pool.clone(), torch.full((B * H * nb, 64, 1), GARBAGE)
    table = torch.arange(B * H * nb, dtype=torch.int32).view(B, H, nb)
    for b in range(B):
        for h in range(H):
            for j in range(nb):
                p, keys = int(table[b, h, j]), slice(j * 64, min(j * 64 + 64, Tmax))
                w = keys.stop - keys.start
                k_pool[p, :w], v_pool[p, :w], c_pool[p, :w, 0] = k[b, keys, h], v[b, keys, h], c[b, keys, h]
    start = torch.zeros(B, H, dtype=torch.int32)
    qq = q.clone().requires_grad_()
    o = foxacp.ops.forgetting_attention_with_paged_kvcache(
        qq, k_pool, v_pool, c_pool, table, start, lens, qk_bound=2.0, log_eps=None
    )
    assert bool(torch.isfinite(o).all())
    o.sum().backward()
    q64 = q.double().requires_grad_()
    out = []
    for b in range(B):
        L = int(lens[b])
        gates = torch.diff(c[b : b + 1, :L], dim=1, prepend=c[b : b + 1, :1])
        out.append(dense_f64(q64[b : b + 1], k[b : b + 1, :L], v[b : b + 1, :L], gates))
    torch.cat(out).sum().backward()
    assert bool(torch.isfinite(qq.grad).all()), f"dq of sequence 1 = {qq.grad[1].flatten()[:4].tolist()} ..."
    torch.testing.assert_close(qq.grad.double(), q64.grad, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# 5. linear_cross_entropy's Triton path reads strided labels as if contiguous.
# --------------------------------------------------------------------------------------------------------------


def test_linear_ce_triton_path_reads_strided_labels():
    """labels = a strided view (every other entry of a longer int64 tensor, stride 2). ``labels.reshape(-1)``
    keeps the view, and ce_stats_kernel / ce_grad_kernel load ``LABELS + row`` (unit stride assumed,
    triton_ce.py), so row r is scored against big[r] instead of big[2r]: silently wrong losses and gradients
    (the PyTorch path's gather reads the view correctly).
    Inputs: hidden (6, 8), weight (10, 8) randn (seed 0), big = randint(0, 10, (12,)), labels = big[::2]."""
    from foxacp.ops.linear_ce import linear_cross_entropy

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(6, 8, generator=gen)
    weight = torch.randn(10, 8, generator=gen)
    big = torch.randint(0, 10, (12,), generator=gen)
    labels = big[::2]
    assert labels.stride() == (2,)

    h = hidden.clone().requires_grad_()
    loss = linear_cross_entropy(h, weight, labels)
    loss.sum().backward()

    h64 = hidden.double().requires_grad_()
    ref = F.cross_entropy(h64 @ weight.double().T, labels, reduction="none")
    ref.sum().backward()
    torch.testing.assert_close(loss.double(), ref.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h.grad.double(), h64.grad, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# 6. The GPU data bound (triton_plan.max_norms) assumes a unit stride along D: a strided q gives a U too small.
# --------------------------------------------------------------------------------------------------------------


def test_max_norms_follows_the_head_dim_stride():
    """``acp.qk_bound_from_data`` takes its per-(sequence, head) max ||q||, max ||k|| from
    ``triton_plan.max_norms`` whenever q is on CUDA (training op, both backends, and ``check_qk_bound``;
    ``forgetting_attention`` passes ``q.reshape(-1, H, D)``, which keeps the caller's strides). The kernel
    loads ``X + row * stride_t + h * stride_h + arange(D)``: it ignores stride(2). Run here under the
    interpreter on the same kind of view the op accepts: q (1, 100, 2, 32) = a (1, 100, 32, 2) tensor permuted,
    stride(-1) = 2, head 0 nonzero only in its last 16 dims, head 1 zero. The kernel reads head 0's first 16
    dims interleaved with head 1 (all zero) and returns max ||q|| = 0 for head 0, so U = 0 and ACP prunes as if
    every logit were 0: the eps guarantee is void on the GPU for such inputs."""
    from foxacp.ops.triton_plan import max_norms

    gen = torch.Generator().manual_seed(0)
    base = torch.zeros(1, 100, 32, 2)  # (B, T, D, H)
    base[:, :, 16:, 0] = torch.randn(1, 100, 16, generator=gen) * 3.0
    qp = base.permute(0, 1, 3, 2).reshape(-1, 2, 32)  # (B*T, H, D) view, strides (64, 1, 2)
    assert qp.stride() == (64, 1, 2)
    cu = torch.tensor([0, 100], dtype=torch.int32)
    got = max_norms(qp, cu, 1, 100)
    want = qp.norm(dim=-1).amax(0, keepdim=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head_dim", [24, 80, 96])
def test_max_norms_takes_head_dims_that_are_not_powers_of_two(head_dim):
    """Head dims outside (16, 32, 64, 128) are served by the PyTorch path ("backend None: ... else PyTorch"),
    and on CUDA that path still runs ``run_plan`` -> ``qk_bound_from_data`` -> ``triton_plan.max_norms`` whenever
    ACP is on with a data bound (the defaults: log_eps = -10, qk_bound = None). max_norm_kernel builds
    ``tl.arange(0, HEAD_DIM)``, which Triton refuses for a non-power-of-two range, so a GPU call with head dim
    80 or 96 (common head sizes) fails in compilation instead of computing. Under the interpreter the same
    kernel raises ``arange's range must be a power of 2``."""
    from foxacp.ops.triton_plan import max_norms

    x = torch.randn(100, 2, head_dim, generator=torch.Generator().manual_seed(0))
    cu = torch.tensor([0, 100], dtype=torch.int32)
    got = max_norms(x, cu, 1, 100)
    torch.testing.assert_close(got, x.norm(dim=-1).amax(0, keepdim=True), atol=1e-5, rtol=1e-5)
