"""The chunked LM head + cross-entropy against full float64 logits: loss, dhidden and dweight, both paths."""

from __future__ import annotations

import pytest
import torch

from foxacp.ops import linear_ce
from foxacp.ops.linear_ce import linear_cross_entropy, linear_cross_entropy_reference
from foxacp.testing import rel_err


def _inputs(N: int, d: int, V: int, seed: int, ignore_index: int = -100, device: str = "cpu"):
    gen = torch.Generator(device=device).manual_seed(seed)
    hidden = torch.randn(N, d, generator=gen, device=device, dtype=torch.float64)
    weight = torch.randn(V, d, generator=gen, device=device, dtype=torch.float64) * 0.3
    labels = torch.randint(0, V, (N,), generator=gen, device=device)
    labels[::5] = ignore_index  # every fifth row takes no loss
    grad = torch.randn(N, generator=gen, device=device, dtype=torch.float64)
    return hidden, weight, labels, grad


def _run(fn, hidden, weight, labels, grad, dtype, **kwargs):
    """loss and (dhidden, dweight) of fn on leaf copies in dtype, backpropagating grad; all as float64."""
    h = hidden.detach().to(dtype).requires_grad_()
    w = weight.detach().to(dtype).requires_grad_()
    loss = fn(h, w, labels, **kwargs)
    (loss.double() * grad).sum().backward()
    assert h.grad.dtype == dtype and w.grad.dtype == dtype
    return loss.detach().double(), h.grad.double(), w.grad.double()


@pytest.fixture(params=["triton", "torch"])
def path(request, monkeypatch):
    """Both per-chunk paths: the Triton kernels (interpreted on CPU) and the PyTorch twin."""
    if request.param == "torch":
        monkeypatch.setattr(linear_ce, "_use_triton", lambda logits: False)
    return request.param


@pytest.mark.parametrize(
    ("N", "V", "chunk_rows"),
    [(37, 101, 5), (37, 101, None), (64, 64, 64), (9, 2500, 4)],  # chunks and vocab blocks with remainders
)
def test_fp32_matches_float64_full_logits(path, N, V, chunk_rows):
    hidden, weight, labels, grad = _inputs(N, 16, V, seed=N + V)
    ref = _run(linear_cross_entropy_reference, hidden, weight, labels, grad, torch.float64)
    got = _run(linear_cross_entropy, hidden, weight, labels, grad, torch.float32, chunk_rows=chunk_rows)
    assert got[0].dtype == torch.float64 and got[0].shape == (N,)
    assert (got[0][labels == -100] == 0).all()
    for a, b in zip(got, ref, strict=True):
        assert rel_err(a, b) < 2e-6


def test_float64_is_exact_and_other_ignore_index():
    hidden, weight, labels, grad = _inputs(23, 8, 50, seed=3, ignore_index=7)
    ref = _run(linear_cross_entropy_reference, hidden, weight, labels, grad, torch.float64, ignore_index=7)
    got = _run(linear_cross_entropy, hidden, weight, labels, grad, torch.float64, ignore_index=7, chunk_rows=6)
    for a, b in zip(got, ref, strict=True):
        assert rel_err(a, b) < 1e-13


def test_bf16_autocast_as_close_as_the_full_logits():
    """Under bf16 autocast both round hidden and weight to bf16 before the matmul; the chunked path must be as
    close to float64 as the full-logits path is."""
    hidden, weight, labels, grad = _inputs(200, 32, 300, seed=5)
    ref = _run(linear_cross_entropy_reference, hidden, weight, labels, grad, torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full = _run(linear_cross_entropy_reference, hidden, weight, labels, grad, torch.float32)
        got = _run(linear_cross_entropy, hidden, weight, labels, grad, torch.float32, chunk_rows=48)
    assert got[0].dtype == torch.float64
    for a, f, b in zip(got, full, ref, strict=True):
        assert rel_err(a, b) < 1.5 * rel_err(f, b) + 1e-4
        assert rel_err(a, b) < 2e-2


def test_batch_shape_frozen_weight_and_all_ignored_rows(path):
    hidden, weight, labels, grad = _inputs(12, 8, 40, seed=9)
    labels[4:8] = -100
    h = hidden.float().view(3, 4, 8).requires_grad_()
    w = weight.float()  # a frozen head: no weight gradient asked for
    loss = linear_cross_entropy(h, w, labels.view(3, 4))
    assert loss.shape == (3, 4) and (loss[1] == 0).all()
    loss.sum().backward()
    assert (h.grad[1] == 0).all() and h.grad.abs().sum() > 0
    ref = linear_cross_entropy_reference(hidden, weight, labels).float()
    assert rel_err(loss.flatten(), ref) < 2e-6


def test_out_of_range_label_is_not_silent(path):
    hidden, weight, labels, _ = _inputs(6, 8, 20, seed=1)
    labels[2] = 20
    if path == "torch":
        with pytest.raises(RuntimeError):
            linear_cross_entropy(hidden.float(), weight.float(), labels)
    else:
        loss = linear_cross_entropy(hidden.float(), weight.float(), labels)
        assert torch.isnan(loss[2]) and torch.isfinite(loss[[0, 1, 3, 4, 5]]).all()


def test_bad_inputs_are_named():
    h, w, labels = torch.randn(4, 8), torch.randn(10, 8), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(TypeError, match="labels"):
        linear_cross_entropy(h, w, labels.int())
    with pytest.raises(TypeError, match="floating"):
        linear_cross_entropy(h.long(), w, labels)
    with pytest.raises(ValueError, match="weight"):
        linear_cross_entropy(h, torch.randn(10, 7), labels)
    with pytest.raises(ValueError, match="labels"):
        linear_cross_entropy(h, w, labels[:3])
    with pytest.raises(ValueError, match="chunk_rows"):
        linear_cross_entropy(h, w, labels, chunk_rows=0)


@pytest.mark.gpu
def test_gpu_bf16_at_a_gpt2_vocabulary():
    """bf16 autocast on CUDA, V = 50304 (several vocabulary blocks), rows not a multiple of the chunk."""
    hidden, weight, labels, grad = _inputs(3000, 256, 50304, seed=11, device="cuda")
    ref = _run(linear_cross_entropy_reference, hidden, weight, labels, grad, torch.float64)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        full = _run(linear_cross_entropy_reference, hidden, weight, labels, grad, torch.float32)
        got = _run(linear_cross_entropy, hidden, weight, labels, grad, torch.float32, chunk_rows=1024)
    for a, f, b in zip(got, full, ref, strict=True):
        assert rel_err(a, b) < 1.5 * rel_err(f, b) + 1e-4
