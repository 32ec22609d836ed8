"""Python's garbage collector in a training loop: collected between steps, never inside one.

An automatic collection starts whenever enough objects were allocated, which can be in the middle of a step; where
the host launches a step's kernels barely ahead of the GPU (an ACP step's short kernels), its pause is GPU idle
time. As torchtitan does, the loop turns automatic collection off and collects the young generations every
``GC_EVERY`` steps, outside the timed work. (Experiment 060's ACP steps at 360M scattered over 131-230 ms where
exact's stayed within 145-178; whether collection is a cause is experiment 062's question.)
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator

GC_EVERY = 50  # steps between collections: garbage of 50 steps is small next to a model's memory


@contextlib.contextmanager
def manual_gc(every: int = GC_EVERY) -> Iterator[Callable[[int], None]]:
    """Within the block automatic collection is off; yields ``tick(step)``, which collects generations 0 and 1
    when ``step`` is a multiple of ``every``. The collector's previous state comes back on exit."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    was_enabled = gc.isenabled()
    gc.collect()  # start clean: setting up a run leaves many objects behind
    gc.disable()

    def tick(step: int) -> None:
        if step % every == 0:
            gc.collect(1)

    try:
        yield tick
    finally:
        if was_enabled:
            gc.enable()
