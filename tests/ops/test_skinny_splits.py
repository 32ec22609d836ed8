"""the few-row GEMM (ops/skinny.py, ops/triton_skinny.py): skinny_linear with several
splits of K, a weight that is not unit-stride along K, weight rows past 2**31 elements, and split_k's contract."""

import pytest
import torch
import torch.nn.functional as F
import triton

from foxacp.ops.skinny import skinny_linear, takes_skinny
from foxacp.ops.triton_skinny import BLOCK_K, MIN_K_TILES_PER_SPLIT, split_k

CPU = torch.device("cpu")


def _exact(x, w):
    return x.double() @ w.double().T


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 through the interpreter")
@pytest.mark.parametrize("m,n,k", [(2, 90, 1600), (5, 130, 1000), (1, 64, 2048)])
def test_skinny_linear_sums_every_split_of_k(m, n, k):
    """skinny_linear itself (not the partials) when split_k gives several splits: all partials are summed."""
    assert split_k(n, k, CPU) > 1
    g = torch.Generator().manual_seed(k)
    x = torch.randn(m, k, generator=g).half()
    w = (torch.randn(n, k, generator=g) / k**0.5).half()
    assert takes_skinny(x, w)
    y = skinny_linear(x, w)
    exact = _exact(x, w)
    assert y.dtype == torch.float16 and y.shape == (m, n)
    assert (y.double() - exact).abs().max() <= 2e-3 * exact.abs().max()


def test_a_weight_not_unit_stride_along_k_goes_to_f_linear():
    """A transposed weight view (stride along K != 1) is F.linear's call, not a ValueError from the op."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 300, generator=g).half()
    w = torch.randn(300, 70, generator=g).half().T  # (70, 300), strides (1, 70)
    assert not takes_skinny(x, w)
    torch.testing.assert_close(skinny_linear(x, w), F.linear(x, w), rtol=0, atol=0)


@pytest.mark.parametrize("n", [1, 64, 90, 200, 1000, 5000])
@pytest.mark.parametrize("k", [1, 128, 300, 384, 1600, 2048, 4096, 8192, 20000])
def test_split_k_splits_are_never_empty_and_never_shorter_than_the_minimum(n, k):
    """The docstring's contract: every split has at least one tile of K (the kernel's last split is not an idle
    zero partial), and with several splits each has at least MIN_K_TILES_PER_SPLIT tiles."""
    splits = split_k(n, k, CPU)
    tiles_k = triton.cdiv(k, BLOCK_K)
    per = triton.cdiv(tiles_k, splits)
    assert splits >= 1
    assert (splits - 1) * per < tiles_k, (splits, per, tiles_k)  # the last split starts inside K
    if splits > 1:
        assert per >= MIN_K_TILES_PER_SPLIT, (splits, per, tiles_k)


@pytest.mark.skipif(torch.cuda.is_available(), reason="lazily backed host storage, through the interpreter")
def test_weight_rows_past_2_31_elements_apart():
    """The weight's mirror of test_skinny's x test: weight row r sits r * 2^28 elements into its storage, so rows
    8.. pass 2^31 elements and a 32-bit row offset wraps (the view starts 2^31 elements in, so a wrapped offset
    stays inside the lazily backed allocation and reads wrong values instead of faulting)."""
    S, PAD, N, K, M = 1 << 28, 1 << 31, 9, 128, 3
    store = torch.empty(PAD + (N - 1) * S + K, dtype=torch.float16)
    w = store.as_strided((N, K), (S, 1), PAD)
    gen = torch.Generator().manual_seed(0)
    w.copy_((torch.randn(N, K, generator=gen) / K**0.5).half())
    x = torch.randn(M, K, generator=gen).half()
    assert takes_skinny(x, w)
    y = skinny_linear(x, w)
    err = (y.double() - _exact(x, w)).abs().max(dim=0).values
    assert err.max() < 1e-2, f"per-output-column max error {err.tolist()}"
