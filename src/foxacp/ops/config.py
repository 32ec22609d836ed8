"""Block sizes for the forgetting-attention kernels: the one place they are chosen.

The ACP pruning grid (``tile_m`` x ``tile_n``) is shared by every kernel: each kernel's blocks divide it,
so a kernel block is either wholly kept or wholly pruned, and the forward and both backward kernels skip
exactly the same entries.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

TRITON_HEAD_DIMS = (16, 32, 64, 128)


@dataclass(frozen=True)
class Blocks:
    """One kernel's launch shape: query rows x key columns per program, warps, pipeline stages, at most how
    many (sequence, head) pairs run side by side (block by block, heaviest first; ``head_group`` picks the
    number), and an optional register cap per thread (more programs per multiprocessor, at the price of
    spills)."""

    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2
    head_group: int = 8
    maxnreg: int | None = None
    sub: int = 32  # keys (forward, dQ) or query rows (dK/dV) per step of the diagonal's exact loop

    def launch(self) -> dict:
        """Keyword arguments of a Triton launch with these blocks' compile options."""
        opts = {"num_warps": self.num_warps, "num_stages": self.num_stages}
        return opts if self.maxnreg is None else {**opts, "maxnreg": self.maxnreg}


SHORT_CONTEXT = 8192  # keys per sequence up to which ``KernelConfig``'s ``*_short`` blocks apply


_BLOCK_SLOTS = ("fwd", "dkdv", "dq", "dkdv_short", "dq_short")


@dataclass(frozen=True)
class KernelConfig:
    """The ACP tile grid and the blocks of the forward, dK/dV and dQ kernels, and optionally other dK/dV and dQ
    blocks for sequences of at most ``SHORT_CONTEXT`` keys."""

    tile_m: int
    tile_n: int
    fwd: Blocks
    dkdv: Blocks
    dq: Blocks
    dkdv_short: Blocks | None = None
    dq_short: Blocks | None = None

    def __post_init__(self) -> None:
        for name in _BLOCK_SLOTS:
            b: Blocks | None = getattr(self, name)
            if b is not None and (self.tile_m % b.block_m or self.tile_n % b.block_n):
                raise ValueError(f"{name} blocks {b} must divide the ACP tile {self.tile_m}x{self.tile_n}")
            if b is not None and (b.sub < 16 or min(b.block_m, b.block_n) % b.sub):
                raise ValueError(f"{name} blocks {b}: sub must be >= 16 and divide both block sizes")
        # Both backward kernels read QC on dQ's query blocks and KC on the forward's key blocks (see
        # triton_op._backward), so those must be whole numbers of their blocks, at short and long contexts.
        for keys in (SHORT_CONTEXT, SHORT_CONTEXT + 1):
            dkdv, dq = self.dkdv_for(keys), self.dq_for(keys)
            if dq.block_m % dkdv.block_m or dq.block_n % dkdv.block_n:
                raise ValueError(f"dkdv blocks {dkdv} must divide the dq blocks {dq}")
            if self.fwd.block_n % dq.block_n:
                raise ValueError(f"dq's key block {dq.block_n} must divide the forward's {self.fwd.block_n}")

    def to_ints(self) -> list[int]:
        """The config as a flat list of ints (a custom op's argument, ``from_ints`` reads it back): the tile, then
        each kernel's blocks (block_m, block_n, warps, stages, head group, register cap or 0, sub; all 0 when
        unset)."""
        out = [self.tile_m, self.tile_n]
        for name in _BLOCK_SLOTS:
            b: Blocks | None = getattr(self, name)
            if b is None:
                out += [0] * 7
            else:
                out += [b.block_m, b.block_n, b.num_warps, b.num_stages, b.head_group, b.maxnreg or 0, b.sub]
        return out

    @staticmethod
    @functools.lru_cache
    def from_ints(ints: tuple[int, ...]) -> KernelConfig:
        """The inverse of ``to_ints`` (given as a tuple)."""
        blocks = []
        for i in range(len(_BLOCK_SLOTS)):
            m, n, warps, stages, group, maxnreg, sub = ints[2 + 7 * i : 9 + 7 * i]
            blocks.append(None if m == 0 else Blocks(m, n, warps, stages, group, maxnreg or None, sub))
        return KernelConfig(ints[0], ints[1], *blocks)

    def dkdv_for(self, keys: int) -> Blocks:
        """dK/dV's blocks for sequences of up to ``keys`` keys."""
        return self.dkdv_short if self.dkdv_short is not None and keys <= SHORT_CONTEXT else self.dkdv

    def dq_for(self, keys: int) -> Blocks:
        """dQ's blocks for sequences of up to ``keys`` keys."""
        return self.dq_short if self.dq_short is not None and keys <= SHORT_CONTEXT else self.dq


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# Programmatic dependent launch (PDL, Hopper and newer): a kernel starts while the one before it finishes and waits
# for it only before its first load. It pays only where the kernels around ours use it too: the 760M decode step at
# B=1 after 16k gained 5.6-5.9% with Inductor's and ours, lost 2.5% with ours alone (experiments/069-decode-pdl).
_AMONG_DEPENDENT = contextvars.ContextVar("foxacp_among_dependent_launches", default=False)


def dependent_launch_available(device: torch.device) -> bool:
    """Whether code whose kernels all launch with PDL (the compiled decode step: ``infer.graph.compiled_block_step``
    with ``pdl``) should on ``device``: a CUDA device of compute capability 9 or more, not the interpreter, and
    not FOXACP_PDL=0."""
    if interpreting() or device.type != "cuda" or os.environ.get("FOXACP_PDL") == "0":
        return False
    return os.environ.get("FOXACP_PDL") == "1" or _capability(_index(device)) >= (9, 0)


@contextlib.contextmanager
def among_dependent_launches() -> Iterator[None]:
    """Within it, the kernels around ours launch with PDL, so ours do too where ``dependent_launch_available``."""
    token = _AMONG_DEPENDENT.set(True)
    try:
        yield
    finally:
        _AMONG_DEPENDENT.reset(token)


def dependent_launch(device: torch.device) -> bool:
    """Whether our decode kernels (the few-row GEMM, the decode attention's plan, split and combine) launch with
    PDL now: inside ``among_dependent_launches`` where available, or everywhere with FOXACP_PDL=1 (experiments).
    Never on the CPU or under the interpreter."""
    if os.environ.get("FOXACP_PDL") == "1":
        return not interpreting() and device.type == "cuda"
    return _AMONG_DEPENDENT.get() and dependent_launch_available(device)


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.lru_cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def pdl_args(device: torch.device) -> dict:
    """A kernel's ``PDL`` constexpr, and Triton's launch option when it is on (``dependent_launch``)."""
    return {"PDL": True, "launch_pdl": True} if dependent_launch(device) else {"PDL": False}


# Interpreter and PyTorch path on CPU: 64-wide blocks keep the interpreter fast enough for tests; groups of
# 3 heads leave padding programs in most test grids, so that path is exercised too.
_CPU = KernelConfig(64, 64, *[Blocks(64, 64, head_group=3)] * 3)

# Works on any CUDA GPU Triton supports (modest shared memory); used for GPUs not in the table.
_DEFAULT = KernelConfig(64, 64, Blocks(64, 64, 4, 2), Blocks(64, 64, 4, 2), Blocks(64, 64, 4, 2))

# (compute capability major, head dim) -> config, tuned by measurement (see experiments/README.md).
_TABLE: dict[tuple[int, int], KernelConfig] = {
    (9, 64): KernelConfig(
        128,
        128,
        # 2 programs of 8 warps per multiprocessor (experiments/027-fwd-one-key-loop)
        Blocks(128, 128, 8, 2, head_group=32, maxnreg=128),
        Blocks(64, 64, 4, 3, head_group=32),  # experiments/026-backward-block-sweep
        Blocks(128, 64, 4, 3, head_group=32),
        # Up to 8k keys: 3 programs per multiprocessor at 168 registers (216 B of stack) hide more of the short
        # programs' fixed cost: ACP dK/dV -4-5% at 4k and 8k, +2% at 16k (experiments/034-small-call-costs).
        dkdv_short=Blocks(64, 64, 4, 2, head_group=32, maxnreg=168),
        # Up to 8k keys, dQ in 64-row blocks at 168 registers (no spills): 3 programs per multiprocessor where
        # 128-row blocks fit 2; 4k fwd+bwd -4% exact and ACP (experiments/037-dq-more-programs).
        dq_short=Blocks(64, 64, 4, 3, head_group=32, maxnreg=168),
    ),
    (9, 128): KernelConfig(
        128,
        128,
        # 2 programs of 8 warps per multiprocessor (experiments/022-head-dim-128-fwd-blocks)
        Blocks(128, 64, 8, 2, head_group=32, maxnreg=128),
        Blocks(32, 64, 4, 3, head_group=32),
        Blocks(64, 64, 4, 2, head_group=32),
    ),
}


@functools.lru_cache
def _l2_bytes(index: int) -> int:
    return getattr(torch.cuda.get_device_properties(index), "L2_cache_size", 50 * 2**20)


def head_group(blocks: Blocks, device: torch.device, seq_len: int, row_bytes: int) -> int:
    """How many (sequence, head) pairs a kernel runs side by side, block by block, heaviest first.

    On a GPU: the largest power of two, at most ``blocks.head_group``, whose pairs' streamed rows (``seq_len``
    rows of ``row_bytes``: K and V, or Q and dO, and a score-table row) fit in half the L2 cache, so that a
    pair's streamed blocks are re-read from L2 by its other programs. More pairs side by side balance the
    load better (the light programs of pruned heads fill in behind heavy ones); fewer keep L2 hits. Measured
    best on an H100 at 24x64 (experiments/032-head-group-from-l2): 16-32 pairs at 4k, 4-16 at 16k, 1-4 at 64k; this rule
    gives 16, 4 and 1. On the CPU (interpreter): ``blocks.head_group``.
    """
    if device.type != "cuda" or interpreting():
        return blocks.head_group
    fit = max(1, _l2_bytes(_index(device)) // 2 // max(1, seq_len * row_bytes))
    return min(blocks.head_group, 1 << (fit.bit_length() - 1))


_OVERRIDE: list[KernelConfig] = []  # innermost ``use_kernel_config`` last


@contextlib.contextmanager
def use_kernel_config(cfg: KernelConfig) -> Iterator[KernelConfig]:
    """Run every forgetting-attention call inside the block with ``cfg`` (any device, any head dim).

    The public way to try other blocks (experiments, tuning) without touching the table::

        with use_kernel_config(dataclasses.replace(kernel_config(dev, 64), fwd=Blocks(64, 64))):
            o = foxacp.forgetting_attention(q, k, v, g)
    """
    if not isinstance(cfg, KernelConfig):
        raise TypeError(f"cfg must be a KernelConfig, got {type(cfg).__name__}")
    _OVERRIDE.append(cfg)
    try:
        yield cfg
    finally:
        _OVERRIDE.pop()


def kernel_config(device: torch.device, head_dim: int) -> KernelConfig:
    """Return the tile grid and kernel blocks for ``device`` and ``head_dim``.

    Inside ``use_kernel_config``, its config. Otherwise CPU (PyTorch path or the Triton interpreter) gets
    64x64 everywhere, and CUDA GPUs are looked up by compute-capability major version and head dim; anything
    not in the table gets a conservative default rather than an error.
    """
    if _OVERRIDE:
        return _OVERRIDE[-1]
    if device.type != "cuda" or interpreting():
        return _CPU
    return _TABLE.get((_major(_index(device)), head_dim), _DEFAULT)


def _index(device: torch.device) -> int:
    """The CUDA device's index (a bare "cuda" means the current device)."""
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.lru_cache
def _major(index: int) -> int:
    return torch.cuda.get_device_capability(index)[0]
