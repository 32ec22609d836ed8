"""ops/custom_ops.py's skinny_partials op: its fake (meta) function must give the real
output's shape when K is split (several partials), and the op refuses operands of different dtypes."""

import pytest
import torch

from foxacp.ops.custom_ops import skinny_partials_op
from foxacp.ops.triton_skinny import split_k


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 through the interpreter")
@pytest.mark.parametrize("m,n,k", [(2, 90, 1600), (3, 64, 2048)])
def test_fake_matches_the_kernel_when_k_is_split(m, n, k):
    """The fake's (splits, M, N) is the kernel's, also where split_k(N, K) != split_k(K, N) (several splits)."""
    cpu = torch.device("cpu")
    assert split_k(n, k, cpu) > 1 and split_k(n, k, cpu) != split_k(k, n, cpu)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=g).half()
    w = (torch.randn(n, k, generator=g) / k**0.5).half()
    real = skinny_partials_op(x, w)
    assert real.shape == (split_k(n, k, cpu), m, n)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = skinny_partials_op(mode.from_tensor(x), mode.from_tensor(w))
    assert tuple(fake.shape) == tuple(real.shape) and fake.dtype == real.dtype == torch.float32
    torch.library.opcheck(torch.ops.foxacp.skinny_partials.default, (x, w), test_utils=("test_faketensor",))


@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
def test_the_op_refuses_a_weight_of_another_dtype(wdtype):
    """x fp16 against an fp32 or bf16 weight: the kernel would load the weight as another type; the op's contract
    says one dtype, and it raises its ValueError."""
    x, w = torch.randn(3, 300).half(), torch.randn(70, 300).to(wdtype)
    with pytest.raises(ValueError, match="skinny_partials takes"):
        skinny_partials_op(x, w)
