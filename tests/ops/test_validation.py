"""Bad input gets a ValueError or TypeError that names the argument."""

import pytest
import torch

import foxacp
from foxacp.testing import make_inputs


def _call(q, k, v, g, **kw):
    return foxacp.forgetting_attention(q, k, v, g, **{"backend": "torch", **kw})


@pytest.fixture
def inputs():
    return make_inputs(1, 40, 40, 4, 2, 16, seed=0)


@pytest.mark.parametrize(
    "mutate,err,match",
    [
        (lambda q, k, v, g: (q[0], k, v, g), ValueError, "q must have 4 dims"),
        (lambda q, k, v, g: (q, k[:, :, :, :8], v, g), ValueError, "k shape"),
        (lambda q, k, v, g: (q, k, v[:, :30], g), ValueError, "v shape"),
        (lambda q, k, v, g: (q, k, v, g[:, :, :2]), ValueError, "log_fgate must have shape"),
        (lambda q, k, v, g: (torch.cat([q, q], 1), k, v, g), ValueError, "cannot outnumber"),
        (lambda q, k, v, g: (q[:, :, :3], k, v, g[:, :, :3]), ValueError, "multiple of key/value heads"),
        (lambda q, k, v, g: (q, k, v, g.double()), TypeError, "log_fgate must be float32"),
        (lambda q, k, v, g: (q, k, v, g.half()), TypeError, "log_fgate must be float32"),
        (lambda q, k, v, g: (q, k.double(), v, g), TypeError, "k has dtype"),
        (lambda q, k, v, g: (q.int(), k.int(), v.int(), g), TypeError, "q must be a floating"),
        (lambda q, k, v, g: (q, k, v, g.abs() + 0.1), ValueError, "log_fgate must be <= 0"),
        (lambda q, k, v, g: (q, k, v, g.index_fill(1, torch.tensor([3]), float("nan"))), ValueError, "NaN"),
        (lambda q, k, v, g: (q, k, v, g.index_fill(1, torch.tensor([3]), float("inf"))), ValueError, "positive"),
        (lambda q, k, v, g: (q.numpy(), k, v, g), TypeError, "q must be a torch.Tensor"),
    ],
)
def test_bad_tensors(inputs, mutate, err, match):
    with pytest.raises(err, match=match):
        _call(*mutate(*inputs))


@pytest.mark.parametrize(
    "kw,err,match",
    [
        ({"backend": "cuda"}, ValueError, "backend must be"),
        ({"log_eps": 1.0}, ValueError, "log_eps"),
        ({"log_eps": float("nan")}, ValueError, "log_eps"),
        ({"sm_scale": -1.0}, ValueError, "sm_scale"),
        ({"qk_bound": -1.0}, ValueError, "qk_bound"),
        ({"qk_bound": torch.ones(3)}, ValueError, "qk_bound"),
        ({"qk_bound": "big"}, TypeError, "qk_bound"),
        ({"cu_seqlens": torch.tensor([0, 10, 40])}, TypeError, "cu_seqlens must be int32"),
        ({"cu_seqlens": torch.tensor([0, 10, 10, 40], dtype=torch.int32)}, ValueError, "strictly increasing"),
        ({"cu_seqlens": torch.tensor([0, 30, 20, 40], dtype=torch.int32)}, ValueError, "strictly increasing"),
        ({"cu_seqlens": torch.tensor([0, 10, 39], dtype=torch.int32)}, ValueError, "must end at"),
        ({"cu_seqlens": torch.tensor([1, 10, 40], dtype=torch.int32)}, ValueError, "must start at 0"),
        ({"cu_seqlens": torch.tensor([[0, 40]], dtype=torch.int32)}, ValueError, r"shape \(N\+1,\)"),
        ({"cu_seqlens": torch.tensor([0, 10, 40], dtype=torch.int32), "max_seqlen": 5}, ValueError, "max_seqlen"),
    ],
)
def test_bad_arguments(inputs, kw, err, match):
    with pytest.raises(err, match=match):
        _call(*inputs, **kw)


def test_packed_needs_batch_one():
    q, k, v, g = make_inputs(2, 40, 40, 2, 2, 16, seed=0)
    with pytest.raises(ValueError, match="batch size 1"):
        _call(q, k, v, g, cu_seqlens=torch.tensor([0, 40], dtype=torch.int32))


def test_packed_needs_equal_lengths():
    q, k, v, g = make_inputs(1, 30, 40, 2, 2, 16, seed=0)
    with pytest.raises(ValueError, match="Tq == Tk"):
        _call(q, k, v, g, cu_seqlens=torch.tensor([0, 40], dtype=torch.int32))


def test_triton_rejects_unsupported_head_dim_and_dtypes():
    q, k, v, g = make_inputs(1, 40, 40, 2, 2, 24, seed=0)
    with pytest.raises(ValueError, match="head dim 24"):
        _call(q, k, v, g, backend="triton")
    q, k, v, g = make_inputs(1, 40, 40, 2, 2, 16, seed=0)
    with pytest.raises(TypeError, match="float64"):
        _call(q.double(), k.double(), v.double(), g, backend="triton")
    with pytest.raises(TypeError, match="bf16"):
        _call(q.bfloat16(), k.bfloat16(), v.bfloat16(), g, backend="triton")


def test_unsupported_head_dim_falls_back_to_torch_on_cpu():
    q, k, v, g = make_inputs(1, 40, 40, 2, 2, 24, seed=0)
    o = foxacp.forgetting_attention(q, k, v, g)
    assert o.shape == q.shape


def test_mixed_devices():
    q, k, v, g = make_inputs(1, 40, 40, 2, 2, 16, seed=0)
    with pytest.raises(ValueError, match="k is on meta"):
        _call(q, k.to("meta"), v, g)
    with pytest.raises(ValueError, match="cu_seqlens is on meta"):
        _call(q, k, v, g, cu_seqlens=torch.tensor([0, 40], dtype=torch.int32, device="meta"))


def test_qk_bound_tensor_values_checked_only_with_value_checks():
    """A tensor bound's values are read back to the host (a sync) only while value checks are on."""
    q, k, v, g = make_inputs(1, 40, 40, 2, 2, 16, seed=0)
    bad = torch.tensor([1.0, -1.0])
    with pytest.raises(ValueError, match="qk_bound"):
        foxacp.forgetting_attention(q, k, v, g, qk_bound=bad, backend="torch")
    previous = foxacp.set_value_checks(False)
    try:
        foxacp.forgetting_attention(q, k, v, g, qk_bound=bad, backend="torch")  # not read back, so not caught
    finally:
        foxacp.set_value_checks(previous)


def test_launch_grid_limit():
    from foxacp.ops.triton_op import _grid

    assert _grid(48, 16384, 128, 8) == (8, 128, 6)
    assert _grid(5, 100, 64, 8) == (5, 2, 1)
    assert _grid(200_000, 100, 64, 1) == (4, 2, 50_000)  # groups capped at 65535
    with pytest.raises(ValueError, match="65535"):
        _grid(1, 65536 * 64 + 1, 64, 8)


def test_head_group_fits_half_the_l2(monkeypatch):
    from foxacp.ops import config
    from foxacp.ops.config import Blocks

    monkeypatch.setattr(config, "_l2_bytes", lambda index: 50 * 2**20)
    monkeypatch.setattr(config, "interpreting", lambda: False)
    gpu, row = torch.device("cuda", 0), 288  # 24x64 bf16: K, V and a table row
    assert [config.head_group(Blocks(64, 64, head_group=32), gpu, t, row) for t in (4096, 16384, 65536)] == [16, 4, 1]
    assert config.head_group(Blocks(64, 64, head_group=32), gpu, 2**22, row) == 1  # never below one pair
    assert config.head_group(Blocks(64, 64, head_group=3), gpu, 128, row) == 3  # at most head_group
    assert config.head_group(Blocks(64, 64, head_group=3), torch.device("cpu"), 2**22, row) == 3  # CPU: as given


def test_short_context_blocks():
    from foxacp.ops.config import SHORT_CONTEXT, Blocks, KernelConfig

    base, short, dq, dq_short = Blocks(64, 64, 4, 3), Blocks(64, 64, 4, 2, maxnreg=168), Blocks(128, 64), Blocks(64, 64)
    cfg = KernelConfig(128, 128, Blocks(128, 128), base, dq, dkdv_short=short, dq_short=dq_short)
    assert cfg.dkdv_for(SHORT_CONTEXT) is short and cfg.dkdv_for(SHORT_CONTEXT + 1) is base
    assert cfg.dq_for(SHORT_CONTEXT) is dq_short and cfg.dq_for(SHORT_CONTEXT + 1) is dq
    plain = KernelConfig(128, 128, Blocks(128, 128), base, dq)
    assert plain.dkdv_for(16) is base and plain.dq_for(16) is dq
    with pytest.raises(ValueError, match="must divide the dq blocks"):
        KernelConfig(128, 128, Blocks(128, 128), base, Blocks(64, 64), dkdv_short=Blocks(128, 64))
    with pytest.raises(ValueError, match="must divide the dq blocks"):  # short dK/dV against short dQ
        KernelConfig(128, 128, Blocks(128, 128), Blocks(32, 64), dq, dkdv_short=Blocks(64, 64), dq_short=Blocks(32, 64))
    with pytest.raises(ValueError, match="must divide the forward"):
        KernelConfig(128, 128, Blocks(128, 64), Blocks(32, 32), Blocks(64, 32), dq_short=Blocks(64, 128))


def test_blocks_launch_options():
    from foxacp.ops.config import Blocks

    assert Blocks(64, 64, 4, 3).launch() == {"num_warps": 4, "num_stages": 3}
    assert Blocks(64, 64, 8, 2, maxnreg=160).launch() == {"num_warps": 8, "num_stages": 2, "maxnreg": 160}


def test_tma_ready_copies_only_what_the_copy_engine_cannot_read():
    from foxacp.ops.triton_op import _tma_ready

    x = torch.randn(10, 3, 16)
    assert _tma_ready(x) is x
    fused = torch.randn(10, 3, 3, 16)[:, 1]  # a slice of a fused qkv: row stride 3 H D, heads adjacent
    assert _tma_ready(fused) is fused
    heads_major = torch.randn(3, 10, 16).transpose(0, 1)  # heads not adjacent: copied
    out = _tma_ready(heads_major)
    assert out is not heads_major and out.is_contiguous() and torch.equal(out, heads_major)
    one_head = torch.randn(10, 16).as_strided((10, 1, 16), (16, 999, 1))  # one head: its stride does not matter
    assert _tma_ready(one_head) is one_head
    misaligned = torch.randn(10 * 3 * 16 + 1)[1:].view(10, 3, 16)  # contiguous, 4 bytes past an aligned base
    assert misaligned.is_contiguous() and misaligned.data_ptr() % 16
    out = _tma_ready(misaligned)
    assert out.data_ptr() % 16 == 0 and torch.equal(out, misaligned)


def test_blocks_sub_must_divide_the_blocks():
    from foxacp.ops.config import Blocks, KernelConfig

    with pytest.raises(ValueError, match="sub"):
        KernelConfig(64, 64, Blocks(64, 64, sub=48), Blocks(64, 64), Blocks(64, 64))
    with pytest.raises(ValueError, match="sub"):
        KernelConfig(64, 64, Blocks(64, 64), Blocks(16, 16), Blocks(64, 64))


@pytest.mark.parametrize("kw", [dict(sm_scale=True), dict(qk_bound=True)])
def test_bools_are_not_numbers(kw):
    """True would be taken as 1.0: as a qk_bound far below the logits' bound, it voids the eps guarantee."""
    q, k, v, g = make_inputs(1, 8, 8, 2, 2, 16)
    with pytest.raises((TypeError, ValueError), match="sm_scale|qk_bound"):
        foxacp.forgetting_attention(q, k, v, g, backend="torch", **kw)
    with pytest.raises((TypeError, ValueError), match="sm_scale|qk_bound"):
        lens = torch.tensor([8], dtype=torch.int32)
        foxacp.forgetting_attention_with_kvcache(q[:, -1:], k, v, g.cumsum(1), lens, backend="torch", **kw)
