"""How much device memory a training step holds, and whether activation checkpointing is needed.

``activation_checkpointing="auto"`` (the default) recomputes the blocks in the backward only when the step would
not fit otherwise: checkpointing costs about one more forward of every block (a quarter of the step), which the
760M preset paid on an H200 with 16 GB of its 141 GB in use (experiments/058-auto-checkpointing). The estimate is
measured, not modelled: one block's forward runs once on the real device and micro-batch, and the bytes its
autograd graph keeps for the backward (the saved tensors, parameters excluded) are counted. A compiled block keeps
less than the eager one (Inductor's partitioner recomputes cheap intermediates instead): the eager count is an upper
bound for it, 1.75x the measured peak of a compiled 760M step (76 GiB against 42-44, experiment 058), enough to make an
80 GB H100 checkpoint that step. So where the eager count says a compiled step would not fit, the block is measured
again compiled, as the trainer will run it, and that count decides.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from foxacp.ops.linear_ce import CHUNK_ELEMENTS, linear_cross_entropy

# Checkpointing turns on when the step without it would need more than this share of the device's memory: the
# rest covers the allocator's fragmentation, the CUDA context and what the estimate leaves out.
MEMORY_FRACTION = 0.85
# Bytes per parameter held all through training: fp32 weight, fp32 gradient, AdamW's two fp32 moments.
STATE_BYTES_PER_PARAM = 16


def saved_bytes(fn: Callable[[], Tensor], exclude: set[int] | None = None) -> int:
    """Bytes of the distinct storages that the autograd graph of ``fn()`` saves for its backward, leaving out
    the storages whose data pointers are in ``exclude`` (the parameters, which are held anyway)."""
    exclude = exclude or set()
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in exclude:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out  # the graph (and everything it saved) goes with it
    return sum(seen.values())


def _param_ptrs(module: nn.Module) -> set[int]:
    return {p.untyped_storage().data_ptr() for p in module.parameters()}


@dataclass(frozen=True)
class StepMemory:
    """The bytes one device holds in a training step, by part (see :func:`step_memory`)."""

    state: int  # weights, gradients and optimizer moments (this device's shard of them)
    block: int  # what one block's forward saves for its backward, for one micro-batch
    block_input: int  # one block's input: all a checkpointed block keeps until its backward
    head: int  # what the final norm, the LM head and the loss save
    head_temp: int  # the head's temporaries: one chunk of logits and its gradient, the float32 gradient of W
    n_layers: int
    compiled: bool = False  # ``block`` counts what the compiled block saves (else the eager block)

    def peak(self, checkpointing: bool) -> int:
        """Estimated peak bytes of a step: the state, every block's saved tensors (with checkpointing: every
        block's input, plus one block recomputed at a time), the head, and one block's worth of the backward's
        temporaries (activation gradients, the attention backward's outputs)."""
        blocks = self.n_layers * self.block_input + self.block if checkpointing else self.n_layers * self.block
        return self.state + blocks + self.head + self.head_temp + self.block


def _block_saved(block: nn.Module, x: Tensor, pos: Tensor, compiled: bool) -> tuple[int, bool]:
    """What one forward of ``block`` saves, and whether it was counted compiled: a block that does not compile is
    counted eagerly, as the trainer then runs it (its fallback)."""
    exclude = _param_ptrs(block)
    if compiled:
        try:
            return saved_bytes(lambda: torch.compile(block)(x, pos), exclude), True
        except torch.OutOfMemoryError:
            raise
        except Exception:  # noqa: BLE001 - any compilation failure: count the block the trainer would fall back to
            pass
    return saved_bytes(lambda: block(x, pos), exclude), False


def step_memory(
    model: nn.Module,
    batch: int,
    seq_len: int,
    *,
    world_size: int = 1,
    autocast: contextlib.AbstractContextManager,
    compiled: bool = False,
) -> StepMemory:
    """Measure what a training step of ``model`` (a ``FoxLM``, on its device, neither sharded nor compiled yet)
    holds on one device, for micro-batches of ``batch`` x ``seq_len`` tokens under ``autocast``.

    Runs the first block's forward once (its attention kernels, on the model's device; with ``compiled``, through
    ``torch.compile`` as the trainer compiles it) and the head's; the state is sharded over ``world_size`` devices
    (FSDP), with two blocks' weights gathered at a time.
    """
    from foxacp.model.lm import doc_positions

    block, cfg = model.blocks[0], model.config
    device = next(model.parameters()).device
    n_params = sum(p.numel() for p in model.parameters())
    block_params = sum(p.numel() * p.element_size() for p in block.parameters())
    state = STATE_BYTES_PER_PARAM * n_params // world_size + (2 * block_params if world_size > 1 else 0)
    x = torch.zeros(batch, seq_len, cfg.d_model, device=device, requires_grad=True)
    pos = doc_positions(batch, seq_len, None, device)
    stats = getattr(block.attn, "last_stats", None)
    with autocast:
        per_block, counted_compiled = _block_saved(block, x, pos, compiled)
        labels = torch.zeros(batch, seq_len, dtype=torch.int64, device=device)
        head_saved = saved_bytes(
            lambda: linear_cross_entropy(model.norm(x), model.lm_head.weight, labels), _param_ptrs(model)
        )
    if hasattr(block.attn, "last_stats"):
        block.attn.last_stats = stats  # the probe is not a step: leave the recorded ACP statistics alone
    vocab = model.lm_head.weight.shape[0]
    rows = min(batch * seq_len, max(1, CHUNK_ELEMENTS // vocab))
    return StepMemory(
        state=state,
        block=per_block,
        block_input=x.numel() * x.element_size(),
        head=head_saved,
        head_temp=2 * rows * vocab * 4 + vocab * cfg.d_model * 4,
        n_layers=len(model.blocks),
        compiled=counted_compiled,
    )


def checkpointing_wanted(
    setting: bool | str,
    measure: Callable[[], StepMemory],
    capacity: int | None,
    measure_compiled: Callable[[], StepMemory] | None = None,
) -> tuple[bool, StepMemory | None]:
    """TrainConfig.activation_checkpointing -> (checkpoint the blocks?, the estimate it was decided on).

    True and False are taken as they are. "auto" measures (``measure()``, the eager block) and checkpoints when
    the step without it would need more than MEMORY_FRACTION of ``capacity`` bytes (the device's memory); where
    it would and the blocks will be compiled (``measure_compiled`` given), the compiled block's count decides
    instead (the eager count is only an upper bound of it). With no capacity (the CPU, where runs are small and
    host memory is not what limits them) it stays off without measuring. A measurement that itself runs out of
    memory (one block's forward) turns it on.
    """
    if isinstance(setting, bool):
        return setting, None
    if setting != "auto":
        raise ValueError(f"activation_checkpointing must be true, false or auto, got {setting!r}")
    if capacity is None:
        return False, None
    try:
        mem = measure()
        if mem.peak(checkpointing=False) > MEMORY_FRACTION * capacity and measure_compiled is not None:
            mem = measure_compiled()
    except torch.OutOfMemoryError:
        return True, None
    return mem.peak(checkpointing=False) > MEMORY_FRACTION * capacity, mem


def device_capacity(device: torch.device) -> int | None:
    """Total bytes of memory of a CUDA ``device``; None for any other device."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory


def describe(checkpointing: bool, mem: StepMemory | None, capacity: int) -> str:
    """One line for the log: what "auto" decided and on which numbers (``mem`` None: the measurement ran out of
    memory)."""
    gib = 2**30
    if mem is None:
        return "activation checkpointing on (auto: one block's forward ran out of memory while measuring)"
    return (
        f"activation checkpointing {'on' if checkpointing else 'off'} (auto: a step needs ~"
        f"{mem.peak(False) / gib:.1f} GiB without it, ~{mem.peak(True) / gib:.1f} GiB with it, of the device's "
        f"{capacity / gib:.0f} GiB{'; the compiled block measured' if mem.compiled else ''})"
    )
