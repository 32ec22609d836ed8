"""The chunked LM head + cross-entropy (foxacp.ops.linear_ce / triton_ce) at its edges.

Each test compares against an obviously-correct float64 PyTorch computation (full logits, F.cross_entropy).
Run on the CPU with TRITON_INTERPRET=1 (tests/conftest.py sets it when there is no GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from foxacp.ops import linear_ce


def _f64(hidden, weight, labels, ignore_index=-100):
    """float64 loss, dhidden, dweight of sum(loss) with the full logits."""
    h = hidden.detach().double().requires_grad_()
    w = weight.detach().double().requires_grad_()
    loss = F.cross_entropy(h @ w.T, labels, ignore_index=ignore_index, reduction="none")
    loss.sum().backward()
    return loss.detach(), h.grad, w.grad


def test_triton_stats_first_vocab_block_all_neg_inf_gives_finite_loss():
    """fp16 logits that overflow to -inf across the whole first 2048-wide vocabulary block of a row (a legal
    input: the other logits are finite and every label points at a finite logit).

    triton_ce.ce_stats_kernel starts its running maximum at -inf; after a block of only -inf logits
    m_new = -inf and exp(m - m_new) = exp(-inf - -inf) = NaN, so LSE and the loss become NaN (and so do the
    gradients). F.cross_entropy on the same fp16 logits (linear_cross_entropy_reference) and float64 both give
    finite values: those vocabulary entries simply have probability 0.

    Inputs: d = 2, V = 2048 + 8. hidden = (256, 1); weight rows 0..2047 = (-256, 0) -> logit -65536, which is
    -inf in fp16 (and finite, with probability e^-65536 = 0, in float64); rows 2048.. = (0, w_j) with small
    w_j. Tolerances: the finite logits are O(1) values rounded to fp16 (relative 2^-11), so 1e-2 absolute on
    O(1) losses and dhidden is generous; dweight = sum_r dlogits[r] * hidden[r] with |hidden| = 256, so it is
    compared in relative norm (1e-2, again ~20x fp16 rounding).
    """
    V, d = 2048 + 8, 2
    gen = torch.Generator().manual_seed(0)
    weight = torch.zeros(V, d)
    weight[:2048, 0] = -256.0
    weight[2048:, 1] = torch.randn(8, generator=gen)
    hidden = torch.tensor([[256.0, 1.0], [256.0, -1.0], [256.0, 0.5]])
    labels = torch.tensor([2048, 2053, 2055])
    h16, w16 = hidden.half().requires_grad_(), weight.half().requires_grad_()
    assert torch.isinf(h16.detach() @ w16.detach()[:2048].T).all()  # the first block is all -inf in fp16

    loss = linear_ce.linear_cross_entropy(h16, w16, labels)
    loss.sum().backward()

    want, dh, dw = _f64(h16, w16, labels)
    assert torch.isfinite(want).all() and torch.isfinite(dh).all() and torch.isfinite(dw).all()
    # The same fp16 logits through F.cross_entropy (the library's own slow twin) are finite too.
    assert torch.isfinite(linear_ce.linear_cross_entropy_reference(h16.detach(), w16.detach(), labels)).all()
    assert torch.isfinite(loss).all(), f"loss {loss.tolist()} (float64: {want.tolist()})"
    assert (loss.double() - want).abs().max().item() < 1e-2
    assert (h16.grad.double() - dh).abs().max().item() < 1e-2
    assert ((w16.grad.double() - dw).norm() / dw.norm()).item() < 1e-2


def test_double_backward_through_the_loss_raises_or_is_right():
    """A gradient penalty through the chunked loss: grad(loss.sum(), hidden, create_graph=True), then
    loss.sum() + ||dloss/dhidden||^2. ``_LinearCrossEntropy.backward`` is ``@once_differentiable``, whose comment
    says 'a double backward raises instead of dropping terms'. But once_differentiable only records its error
    node when a grad_output requires grad; here grad_output is the constant ones of .sum(), so the first-order
    gradient comes back as a plain constant and the penalty's second-order term is silently dropped: no error,
    wrong gradient. float64 autograd through the full logits gives the true gradient.

    Tolerance: float32 chunked path against float64 on O(1) values: 1e-4 relative (float32 eps ~1e-7)."""
    gen = torch.Generator().manual_seed(1)
    N, d, V = 6, 4, 11
    hidden = torch.randn(N, d, generator=gen)
    weight = torch.randn(V, d, generator=gen)
    labels = torch.randint(0, V, (N,), generator=gen)

    def penalised(h, w, fn):
        loss = fn(h, w)
        (gh,) = torch.autograd.grad(loss.sum(), h, create_graph=True)
        (loss.sum() + gh.square().sum()).backward()
        return h.grad

    h64 = hidden.double().requires_grad_()
    want = penalised(h64, weight.double(), lambda h, w: F.cross_entropy(h @ w.T, labels, reduction="none"))

    h32 = hidden.clone().requires_grad_()
    try:
        got = penalised(h32, weight, lambda h, w: linear_ce.linear_cross_entropy(h, w, labels))
    except RuntimeError as err:  # refusing the double backward is fine
        assert "differentiable" in str(err) or "double" in str(err) or "twice" in str(err)
        return
    rel = ((got.double() - want).norm() / want.norm()).item()
    assert rel < 1e-4, f"second-order term dropped: relative error {rel:.3g} of dL/dhidden"
