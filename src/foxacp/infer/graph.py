"""One decode step captured in a CUDA graph (every layer and the sampling replay as one launch), and the
compiled block step that fuses each layer's small ops first."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from foxacp.model.cache import KVCache
from foxacp.model.lm import RunBlock, block_step
from foxacp.ops import set_value_checks
from foxacp.ops.config import among_dependent_launches


class CUDAGraphStep:
    """``step(tokens)`` (B,) int64 -> (B,) int64, captured once for a cache and replayed.

    The cache's buffers are the graph's static memory, so the graph stays valid for that cache's life
    (rebasing and resets act on the same buffers in place). Capturing runs the step twice on a side stream
    first (Triton compiles, the allocator settles); the lengths, gate totals, token-shift state and
    generator state are restored afterwards, and the entries those runs wrote past each row's length are
    overwritten by the next real step. Value checks are off while capturing, as they read back to the host.
    """

    def __init__(
        self,
        step: Callable[[Tensor], Tensor],
        cache: KVCache,
        example: Tensor,
        generator: torch.Generator | None,
    ) -> None:
        saved = cache.snapshot()
        rng = generator.get_state() if generator is not None else None
        self.tokens = example.clone()
        previous = set_value_checks(False)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    step(self.tokens)
            torch.cuda.current_stream().wait_stream(side)
            cache.restore(saved)
            if generator is not None:
                generator.set_state(rng)
            self.graph = torch.cuda.CUDAGraph()
            if generator is not None:
                self.graph.register_generator_state(generator)
            with torch.cuda.graph(self.graph):
                self.out = step(self.tokens)
        finally:
            set_value_checks(previous)

    def __call__(self, tokens: Tensor) -> Tensor:
        """Replay on tokens (B,); the result is a static buffer, overwritten by the next call."""
        self.tokens.copy_(tokens)
        self.graph.replay()
        return self.out


def compiled_block_step(mode: str | None = None, *, pdl: bool = False) -> RunBlock:
    """``block_step`` through torch.compile: one graph per shape, traced from one block and replayed for every
    layer (the layers differ only in their weights, which are the graph's inputs), so compiling costs one
    block's time whatever the depth. Shared by every caller of a ``mode`` (torch.compile's: None, or e.g.
    "max-autotune-no-cudagraphs" to autotune the small GEMMs), so its compiled graphs are reused.

    Without a mode, Inductor's ``combo_kernels`` launches independent kernels as one: a 760M step at B=1 after 4k
    in 1484-1486 us instead of 1532, 426 kernels instead of 474 (H100; experiment 063). With ``pdl`` (pass
    ``ops.config.dependent_launch_available(device)``) Inductor's kernels and ours launch with programmatic
    dependent launch: only both together pay, 760M at B=1 after 16k +5.6-5.9% tokens/s where ours alone lose 2.5%
    and Inductor's alone gain nothing (H100, H200; experiment 069). torch.compile takes a mode or options, not
    both."""
    # one entry however it is spelt: compiled_block_step(), (None), (pdl=False) and (mode, pdl=True) (a mode
    # takes no options: no PDL) share their compiled graphs
    return _compiled_block_step(mode, pdl and mode is None)


@functools.cache
def _compiled_block_step(mode: str | None, pdl: bool) -> RunBlock:
    if mode is not None:
        return torch.compile(block_step, dynamic=False, mode=mode)
    if not pdl:
        return torch.compile(block_step, dynamic=False, options={"combo_kernels": True})
    compiled = torch.compile(block_step, dynamic=False, options={"combo_kernels": True, "triton.enable_pdl": True})

    def run(*args: Any, **kwargs: Any) -> Any:
        with among_dependent_launches():  # ours launch as Inductor's do (a CUDA graph captured here keeps that)
            return compiled(*args, **kwargs)

    return run


compiled_block_step.cache_clear = _compiled_block_step.cache_clear  # type: ignore[attr-defined]
