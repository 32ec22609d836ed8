"""The decode kernels' default split schedule, "auto": balanced for a call that prunes, and for exact calls from
one (sequence, KV head, row chunk) group per multiprocessor up (experiment 052); even otherwise. The choice
depends on shapes and settings only, and the kernel it picks is checked against the PyTorch twin."""

import pytest
import torch

import foxacp
from foxacp.ops import triton_balance, triton_decode
from foxacp.ops.triton_decode import resolve_schedule, use_schedule
from tests.ops.test_kvcache import make_cache

CPU = torch.device("cpu")  # the interpreter counts 4 multiprocessors (triton_decode._sms)


def test_auto_rule():
    assert triton_decode.SCHEDULE == "auto"
    assert resolve_schedule(None, pruning=True, groups=1, device=CPU) == "balanced"
    assert resolve_schedule(None, pruning=False, groups=3, device=CPU) == "even"
    assert resolve_schedule(None, pruning=False, groups=4, device=CPU) == "balanced"
    assert resolve_schedule("even", pruning=True, groups=100, device=CPU) == "even"
    assert resolve_schedule("balanced", pruning=False, groups=1, device=CPU) == "balanced"
    with use_schedule("even"):
        assert resolve_schedule(None, pruning=True, groups=100, device=CPU) == "even"
    with pytest.raises(ValueError, match="decode schedule"):
        resolve_schedule("fast", pruning=True, groups=1, device=CPU)


@pytest.mark.parametrize(
    "B,Hkv,log_eps,balanced",
    [(1, 2, -10.0, True), (1, 2, None, False), (2, 2, None, True), (3, 1, None, False), (3, 1, -5.0, True)],
)
def test_default_runs_the_chosen_kernel_and_matches_the_twin(monkeypatch, B, Hkv, log_eps, balanced):
    calls = []
    real = triton_balance.balanced_decode_attention
    monkeypatch.setattr(triton_balance, "balanced_decode_attention", lambda *a: calls.append(1) or real(*a))
    lens = [131, 70, 1][:B]
    q, k, v, c, lens, _ = make_cache(B, 1, 131, 2 * Hkv, Hkv, 16, lens, gate_mean=1.5, seed=B)
    o = foxacp.forgetting_attention_with_kvcache(q, k, v, c, lens, log_eps=log_eps, backend="triton")
    twin = foxacp.forgetting_attention_with_kvcache(q, k, v, c, lens, log_eps=log_eps, backend="torch")
    assert bool(calls) == balanced
    torch.testing.assert_close(o, twin, atol=1e-5, rtol=1e-5)
