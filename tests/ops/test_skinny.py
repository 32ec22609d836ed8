"""The few-row GEMM of decode steps (ops/triton_skinny.py) against float64, and its routing."""

import pytest
import torch
import torch.nn.functional as F

from foxacp.ops.skinny import skinny_linear, takes_skinny
from foxacp.ops.triton_skinny import BLOCK_K, BLOCK_N, MAX_ROWS, skinny_partials, split_k

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# float32 through the kernel itself: on a GPU its dots would round to TF32 (skinny_linear never sends fp32 there)
FP32_KERNEL = pytest.mark.skipif(DEVICE != "cpu", reason="fp32 dots are TF32 on a GPU")


def _inputs(m, n, k, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(DEVICE, dtype)
    w = (torch.randn(n, k, generator=g) / k**0.5).to(DEVICE, dtype)
    return x, w


def _exact(x, w):
    return x.double() @ w.double().T


def skinny_matmul(x, w):
    """The kernel's partials summed in float64 (exactly what they hold), in x's dtype."""
    part = skinny_partials(x, w)
    assert part.dtype == torch.float32 and part.shape == (
        split_k(w.shape[0], x.shape[1], x.device),
        *x.shape[:1],
        w.shape[0],
    )
    return part.double().sum(0).to(x.dtype)


@FP32_KERNEL
@pytest.mark.parametrize(
    "m,n,k",
    [(1, 100, 70), (3, 64, 128), (16, 200, 300), (5, 130, 1000), (2, 90, 1600), (1, 1, 1), (7, 513, 257)],
)
def test_matches_float64(m, n, k):
    """Rows, outputs and K that are not multiples of the blocks, one split and several."""
    x, w = _inputs(m, n, k, torch.float32, seed=m * n + k)
    y = skinny_matmul(x, w)
    assert y.shape == (m, n) and y.dtype == x.dtype
    torch.testing.assert_close(y.double(), _exact(x, w), rtol=1e-5, atol=1e-5)


def test_split_k_is_used_and_bounded():
    """The shapes above do reach several splits (on the CPU the kernel counts 4 multiprocessors)."""
    assert split_k(90, 1600, torch.device("cpu")) > 1
    assert split_k(64 * 100, 1600, torch.device("cpu")) == 1  # enough programs from N alone
    assert split_k(90, BLOCK_K, torch.device("cpu")) == 1  # one tile of K cannot be split


def test_fp16_within_rounding():
    x, w = _inputs(4, 150, 400, torch.float16, seed=3)
    y = skinny_linear(x, w)
    exact = _exact(x, w)
    assert (y.double() - exact).abs().max() <= 2e-3 * exact.abs().max()


@FP32_KERNEL
def test_strided_operands():
    """A row stride beyond K on both operands (slices of larger tensors), and x with leading dims."""
    x_big, w_big = _inputs(6, 2 * BLOCK_N + 7, 500, torch.float32, seed=9)
    x, w = x_big[::2, 10:310], w_big[:, 50:350]
    assert x.stride(0) != x.shape[1] and w.stride(0) != w.shape[1]
    torch.testing.assert_close(skinny_matmul(x, w).double(), _exact(x, w), rtol=1e-5, atol=1e-5)
    x3 = torch.randn(2, 1, 300, dtype=torch.float16, device=DEVICE)[..., :]
    w16 = w.to(torch.float16)
    assert takes_skinny(x3, w16)
    torch.testing.assert_close(skinny_linear(x3, w16).double(), (x3.double() @ w16.double().T), rtol=2e-3, atol=2e-3)


def test_non_unit_k_stride_is_copied():
    x = torch.randn(300, 3, dtype=torch.float16, device=DEVICE).T  # (3, 300), stride along K = 3
    _, w = _inputs(40, 40, 300, torch.float16)
    torch.testing.assert_close(skinny_linear(x, w).double(), _exact(x, w), rtol=2e-3, atol=2e-3)


def test_routing():
    x, w = _inputs(MAX_ROWS, 32, 64, torch.float16)
    assert takes_skinny(x, w)
    assert not takes_skinny(torch.cat([x, x[:1]]), w)  # one row too many: F.linear
    assert not takes_skinny(x.float(), w.float())  # float32 is F.linear's (no TF32 rounding here)
    assert not takes_skinny(x, w.float())
    if DEVICE == "cpu":  # the interpreter's bf16 dots are wrong: F.linear
        assert not takes_skinny(x.bfloat16(), w.bfloat16())
    assert not takes_skinny(x[:0], w)
    assert not takes_skinny(x.requires_grad_(), w)  # the kernel has no backward
    with torch.no_grad():
        assert takes_skinny(x, w)
    y = skinny_linear(x, w)  # F.linear, so the gradient flows
    y.sum().backward()
    torch.testing.assert_close(x.grad, w.sum(0).expand_as(x))


def test_fallback_equals_linear():
    x, w = _inputs(20, 33, 65, torch.float32)
    torch.testing.assert_close(skinny_linear(x, w), F.linear(x, w), rtol=0, atol=0)


def test_custom_op_and_compile():
    """The custom op's schema and fake agree with the kernel (``opcheck``), and a compiled call is one graph."""
    x, w = _inputs(2, 70, 130, torch.float16)
    torch.library.opcheck(
        torch.ops.foxacp.skinny_partials.default, (x, w), test_utils=("test_schema", "test_faketensor")
    )
    compiled = torch.compile(skinny_linear, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x[:, None], w)[:, 0], skinny_linear(x, w), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,n,k", [(1, 6192, 1536), (16, 1536, 3584), (4, 50304, 1536), (3, 1000, 777)])
def test_gpu_against_float64(dtype, m, n, k):
    """On the GPU (tensor-core dots): within the rounding of the output and no further from float64 than cuBLAS."""
    x, w = _inputs(m, n, k, dtype, seed=k)
    exact = _exact(x, w)
    ours = (skinny_linear(x, w).double() - exact).abs().max().item()
    cublas = (F.linear(x, w).double() - exact).abs().max().item()
    assert ours <= max(1.5 * cublas, 1e-6 + 2**-7 * exact.abs().max().item())


@pytest.mark.parametrize("k_weight", [32, 128])
def test_a_weight_of_another_width_is_refused_like_f_linear(k_weight):
    """x (2, 64) against a weight (8, 32) or (8, 128): F.linear's error (the kernel read past the weight's rows,
    or used its first 64 columns)."""
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(0)).half()
    w = torch.randn(8, k_weight, generator=torch.Generator().manual_seed(1)).half()
    assert not takes_skinny(x, w)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        skinny_linear(x, w)


def test_a_weight_without_rows_gives_an_empty_output():
    x, w = torch.randn(2, 64).half(), torch.randn(0, 64).half()
    assert skinny_linear(x, w).shape == (2, 0)


@pytest.mark.skipif(DEVICE != "cpu", reason="lazily backed host storage, through the interpreter")
def test_rows_of_x_past_2_31_elements_apart():
    """Row r of x sits r * 2^28 elements into its storage (x = h[:, -1] of a long (B, T, d) activation): rows
    8.. pass 2^31 elements and their 32-bit offset wraps (the storage is lazily backed: a few MiB are touched;
    the view starts 2^31 elements in so that the wrapped offset stays inside the allocation)."""
    S, PAD, M, K, N = 1 << 28, 1 << 31, 9, 128, 64
    store = torch.empty(PAD + (M - 1) * S + K, dtype=torch.float16)
    x = store.as_strided((M, K), (S, 1), PAD)
    gen = torch.Generator().manual_seed(0)
    x.copy_(torch.randn(M, K, generator=gen).half())
    w = (torch.randn(N, K, generator=gen) / K**0.5).half()
    assert takes_skinny(x, w)  # the kernel, not F.linear
    y = skinny_linear(x, w)
    exact = x.double() @ w.double().T
    err = (y.double() - exact).abs().max(dim=1).values
    assert err.max() < 1e-2, f"per-row max error {err.tolist()}"


def test_importing_foxacp_imports_no_triton():
    """Kernels load on first use (TRITON_INTERPRET is read at their import; a CPU user never needs Triton)."""
    import subprocess
    import sys

    code = "import sys, foxacp; print(sorted(m for m in sys.modules if m.startswith(('triton', 'foxacp.ops.triton'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "x,w",
    [
        (torch.randn(MAX_ROWS + 4, 300), torch.randn(70, 300)),  # rows past the kernel's tile: never written
        (torch.randn(300, 3).T, torch.randn(70, 300)),  # x not unit-stride along K: read wrong
        (torch.randn(3, 300), torch.randn(300, 70).T),  # nor the weight
        (torch.randn(3, 300), torch.randn(70, 200)),  # K mismatch: read past each weight row
    ],
)
def test_the_op_refuses_what_its_kernel_cannot_take(x, w):
    """skinny_linear never routes these to the op, but the op is public (torch.ops.foxacp.skinny_partials)."""
    from foxacp.ops.custom_ops import skinny_partials_op

    with pytest.raises(ValueError, match="skinny_partials takes"):
        skinny_partials_op(x.half(), w.half())
