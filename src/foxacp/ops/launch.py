"""Kernel launches with less host time: once Triton's JIT has built a kernel for a call's specialization,
later calls with the same specialization launch the compiled kernel directly.

Triton's JIT launcher binds the arguments, works out their specialization and looks the compiled kernel up
on every call: on a lent H100 host that took 52-59 us for the forward kernel, against 22-27 us through the
compiled kernel's own launcher (notes/kernels.md #35). Short calls are host bound (a 12-head, 4k-token ACP
forward issues about as slowly as its kernels run), so this is time the user waits for.

The key here is finer than Triton's specialization, so a hit never reuses a kernel built for other
arguments: every int, bool and constexpr by value, tensors by dtype and 16-byte alignment (the alignment
Triton specializes on), descriptors by every field, launch options by value; only the values of runtime
floats are left out (Triton passes them as fp32 arguments). The twin is ``kernel[grid](...)`` itself: under
the interpreter, with FOXACP_JIT_LAUNCH=1 or after ``set_direct_launch(False)``, every launch goes through it.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from triton.tools.tensor_descriptor import TensorDescriptor

from .config import interpreting

_MAX_ENTRIES = 512  # per kernel; cleared when full (new shapes refill it through the JIT)
_enabled = os.environ.get("FOXACP_JIT_LAUNCH", "0") in ("", "0")


class _Kernel:
    """What the direct launch of one JIT function needs: its parameters in order, which are constexpr, and
    the compiled kernels by key."""

    def __init__(self, fn) -> None:
        self.params = tuple(fn.arg_names)
        self.names = frozenset(self.params)
        self.constexpr = tuple(p.is_constexpr for p in fn.params)
        self.compiled: dict[tuple, Any] = {}


_KERNELS: dict[Any, _Kernel] = {}


def set_direct_launch(enabled: bool) -> bool:
    """Launch compiled kernels directly (the default) or always through Triton's JIT; returns the previous."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


def _arg_key(a: Any, constexpr: bool) -> Any:
    if isinstance(a, torch.Tensor):
        return a.dtype, a.data_ptr() % 16 == 0
    if type(a) is float and not constexpr:
        return float
    if isinstance(a, TensorDescriptor):
        base = a.base
        shape, strides, block = tuple(a.shape), tuple(a.strides), tuple(a.block_shape)
        return TensorDescriptor, base.dtype, base.data_ptr() % 16 == 0, shape, strides, block, a.padding
    return type(a), a


def launch(fn, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> None:
    """``fn[grid](*args, **kwargs)``, through the compiled kernel once the JIT has built it.

    fn: a ``triton.jit`` function; args and kwargs as its signature takes them (every parameter given),
    plus launch options (num_warps, num_stages, maxnreg, ...) as keywords.
    """
    if not _enabled or interpreting():
        fn[grid](*args, **kwargs)
        return
    k = _KERNELS.get(fn)
    if k is None:
        k = _KERNELS[fn] = _Kernel(fn)
    ordered = (*args, *(kwargs[p] for p in k.params[len(args) :]))
    options = tuple(item for item in kwargs.items() if item[0] not in k.names)
    key = (torch.cuda.current_device(), options, *map(_arg_key, ordered, k.constexpr))
    compiled = k.compiled.get(key)
    if compiled is None:
        compiled = fn[grid](*args, **kwargs)
        if len(k.compiled) >= _MAX_ENTRIES:
            k.compiled.clear()
        k.compiled[key] = compiled
        return
    compiled[(*grid, 1, 1)[:3]](*ordered)  # the compiled kernel's launcher takes all three grid dims
