"""The direct launch (ops/launch.py): its key, its fall-back to the JIT, and the order of the arguments it
passes to a compiled kernel. The GPU test in test_gpu.py compares the op's results with it on and off."""

from __future__ import annotations

import types

import pytest
import torch
from triton.tools.tensor_descriptor import TensorDescriptor

from foxacp.ops import launch as L


def test_key_separates_what_triton_specializes_on():
    x = torch.zeros(64, dtype=torch.float16)
    assert L._arg_key(x, False) == L._arg_key(torch.ones(64, dtype=torch.float16), False)
    assert L._arg_key(x, False) != L._arg_key(x.float(), False)  # dtype
    assert L._arg_key(x, False) != L._arg_key(x[1:], False)  # 2 bytes off the 16-byte alignment
    assert L._arg_key(16, False) != L._arg_key(32, False)  # ints by value (Triton: == 1, % 16, width)
    assert L._arg_key(1, True) != L._arg_key(True, True)
    assert L._arg_key(0.5, False) == L._arg_key(2.0, False)  # a runtime float is an fp32 argument
    assert L._arg_key(0.5, True) != L._arg_key(2.0, True)  # a constexpr float is compiled in
    d = TensorDescriptor(torch.zeros(128, 64, dtype=torch.float16), [128, 64], [64, 1], [64, 64])
    same = TensorDescriptor(torch.ones(128, 64, dtype=torch.float16), [128, 64], [64, 1], [64, 64])
    other = TensorDescriptor(torch.zeros(128, 64, dtype=torch.float16), [128, 64], [64, 1], [32, 64])
    assert L._arg_key(d, False) == L._arg_key(same, False) != L._arg_key(other, False)


class _Fake:
    """Stands in for a triton.jit function with parameters (x, n, BLOCK: constexpr): fake[grid](...) logs a
    JIT call and returns the "compiled kernel", whose compiled[grid](*args) logs a direct call."""

    arg_names = ["x", "n", "BLOCK"]
    params = [types.SimpleNamespace(is_constexpr=c) for c in (False, False, True)]

    def __init__(self) -> None:
        self.jit: list = []
        self.direct: list = []

    def __getitem__(self, grid):
        def jit(*args, **kwargs):
            self.jit.append((grid, args, kwargs))
            return _Compiled(self.direct)

        return jit


class _Compiled:
    def __init__(self, log: list) -> None:
        self.log = log

    def __getitem__(self, grid):
        return lambda *args: self.log.append((grid, args))


@pytest.fixture
def direct(monkeypatch):
    """The direct path as on a GPU: not interpreting, device 0."""
    monkeypatch.setattr(L, "interpreting", lambda: False)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    previous = L.set_direct_launch(True)
    yield
    L.set_direct_launch(previous)


def test_direct_launch_after_the_first_call(direct):
    fake, x = _Fake(), torch.zeros(32)
    L.launch(fake, (4, 1), x, 7, BLOCK=64, num_warps=4)
    assert len(fake.jit) == 1 and not fake.direct  # first: through the JIT, which compiles
    L.launch(fake, (5, 2), x, 7, BLOCK=64, num_warps=4)
    assert len(fake.jit) == 1 and fake.direct == [((5, 2, 1), (x, 7, 64))]  # then: every parameter in order
    L.launch(fake, (5, 2), x, 8, BLOCK=64, num_warps=4)  # another int: another specialization
    L.launch(fake, (5, 2), x, 7, BLOCK=64, num_warps=8)  # another launch option
    L.launch(fake, (5, 2), x[1:], 7, BLOCK=64, num_warps=4)  # misaligned
    assert len(fake.jit) == 4 and len(fake.direct) == 1
    L.set_direct_launch(False)
    L.launch(fake, (5, 2), x, 7, BLOCK=64, num_warps=4)  # switched off: always the JIT
    assert len(fake.jit) == 5 and len(fake.direct) == 1


def test_interpreter_always_goes_through_the_jit(monkeypatch):
    monkeypatch.setattr(L, "interpreting", lambda: True)
    calls = []
    fake = type("Fake", (), {"__getitem__": lambda s, g: lambda *a, **k: calls.append((g, a, k))})()
    L.launch(fake, (1,), 3, B=2)
    L.launch(fake, (1,), 3, B=2)
    assert calls == [((1,), (3,), {"B": 2})] * 2 and fake not in L._KERNELS
