"""One process or many: process group from the torchrun environment, FSDP2, activation checkpointing.

Parallelism is applied to the unchanged model (torchtitan style): activation checkpointing wraps each of
``model.blocks``, ``torch.compile`` compiles each block in place, and FSDP2 ``fully_shard`` shards each
block and then the root. Without torchrun (no ``RANK`` in the environment) the run is a single process on
CPU or one GPU and none of the collectives below communicate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    distributed: bool  # a process group is initialised (launched by torchrun or a test's spawn)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    """``pref`` "auto" | "cpu" | "cuda" -> the device of this process. Raises ValueError on a bad name or
    when "cuda" is asked for without a GPU."""
    if pref not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {pref!r}")
    if pref == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA GPU is available")
    if pref == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def init_distributed(device_pref: str = "auto") -> Dist:
    """Initialise from the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_*``)
    when present: NCCL on GPUs, gloo on CPU. Otherwise a single process. Sets ``NCCL_NVLS_ENABLE=0``
    unless the environment already chooses (NVLink multicast stays off on our machines)."""
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    if "RANK" not in os.environ:
        device = pick_device(device_pref)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return Dist(0, 1, 0, device, distributed=False)
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = pick_device(device_pref, local_rank)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return Dist(rank, world_size, local_rank, device, distributed=True)


def cleanup(d: Dist) -> None:
    if d.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum ``x`` over all ranks in place and return it (a no-op in a single process)."""
    if d.distributed:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_reduce_max(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """The largest ``x`` over all ranks, in place, returned (a no-op in a single process)."""
    if d.distributed:
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


def barrier(d: Dist) -> None:
    if d.distributed:
        dist.barrier()


def broadcast_object(obj, d: Dist):
    """Rank 0's ``obj`` on every rank."""
    if not d.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, d: Dist) -> list | None:
    """Every rank's ``obj`` as a list on rank 0, None elsewhere."""
    if not d.distributed:
        return [obj]
    out = [None] * d.world_size if d.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def compile_wanted(setting: bool | str, device: torch.device) -> bool:
    """TrainConfig.compile on ``device``: "auto" compiles on CUDA only (on the CPU compilation costs more than
    it saves in short runs and needs a C++ toolchain). Raises ValueError for another setting."""
    if setting == "auto":
        return device.type == "cuda"
    if not isinstance(setting, bool):
        raise ValueError(f"compile must be true, false or auto, got {setting!r}")
    return setting


def compile_block(block: nn.Module, cuda_graphs: bool = False) -> None:
    """Compile one block in place (``nn.Module.compile``: state-dict keys unchanged); with ``cuda_graphs``, its
    forward and backward replay as CUDA graphs (mode "reduce-overhead")."""
    block.compile(mode="reduce-overhead" if cuda_graphs else None)


# The CUDA graphs' memory pool holds each block's outputs apart from the caching allocator: a 360M step at 4k
# peaked 11% higher with them (experiments/068-train-host-cost); "auto" wants this much room on top of the estimate.
GRAPH_MEMORY_MARGIN = 1.2


def graphs_wanted(
    setting: bool | str,
    device: torch.device,
    *,
    compiled: bool,
    distributed: bool,
    checkpointing: bool,
    peak_bytes: int | None = None,
    capacity: int | None = None,
) -> bool:
    """TrainConfig.cuda_graphs -> replay the compiled blocks as CUDA graphs?

    They need compiled blocks on one CUDA device (FSDP frees and regathers the parameters the graphs would have
    captured) and no activation checkpointing (its recomputation would replay a forward graph inside the
    backward). "auto" takes them where those hold and the step's estimated peak (``peak_bytes``, when measured)
    times GRAPH_MEMORY_MARGIN stays within MEMORY_FRACTION of ``capacity``. Raises ValueError for true where they
    cannot run, or another setting.
    """
    from .memory import MEMORY_FRACTION

    if not (isinstance(setting, bool) or setting == "auto"):
        raise ValueError(f"cuda_graphs must be true, false or auto, got {setting!r}")
    blockers = [
        why
        for why, present in (
            ("the blocks are not compiled (compile)", not compiled),
            (f"the device is {device.type}, not cuda", device.type != "cuda"),
            ("the run is distributed (FSDP)", distributed),
            ("activation checkpointing is on", checkpointing),
        )
        if present
    ]
    if isinstance(setting, bool):
        if setting and blockers:
            raise ValueError(f"cuda_graphs=true cannot run here: {'; '.join(blockers)} (set cuda_graphs=auto or false)")
        return setting
    if blockers:
        return False
    if peak_bytes is not None and capacity is not None:
        return peak_bytes * GRAPH_MEMORY_MARGIN <= MEMORY_FRACTION * capacity
    return True


def prepare_graph_grads(model: nn.Module) -> None:
    """Give every trainable parameter a zero gradient to accumulate into. A graph's backward writes the gradients
    into its memory pool; a parameter without a .grad would adopt that tensor, and the next micro-batch's replay
    would overwrite it before the optimizer read it. Zero the gradients with ``set_to_none=False`` from then on."""
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)


def uncompile(model: nn.Module) -> None:
    """Make every block of ``model`` run eagerly again after ``compile_block``: nn.Module keeps the compiled
    callable in ``_compiled_call_impl`` and calls the eager one while it is None."""
    for block in model.blocks:
        getattr(block, "_checkpoint_wrapped_module", block)._compiled_call_impl = None


def checkpoint_blocks(model: nn.Module) -> None:
    """Wrap each of ``model.blocks`` (compiled or not) in PyTorch's ``checkpoint_wrapper`` (keys unchanged): its
    activations are recomputed in the backward instead of kept."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for i, block in enumerate(model.blocks):
        model.blocks[i] = checkpoint_wrapper(block, preserve_rng_state=False)


def parallelize(
    model: nn.Module,
    d: Dist,
    *,
    activation_checkpointing: bool,
    compile: bool,
    param_dtype: torch.dtype | None,
    cuda_graphs: bool = False,
) -> nn.Module:
    """Apply activation checkpointing, compilation and (when distributed) FSDP2 to ``model`` in place.

    ``model.blocks`` must be an ``nn.ModuleList``. Each block is compiled with ``nn.Module.compile`` (keys
    unchanged), wrapped with PyTorch's ``checkpoint_wrapper`` (keys unchanged), and sharded with
    ``fully_shard``; then the root is sharded. ``param_dtype`` (e.g. bf16) becomes FSDP's
    MixedPrecisionPolicy(param_dtype, reduce_dtype=fp32); None keeps fp32. ``cuda_graphs`` (``graphs_wanted``)
    compiles the blocks as CUDA graphs.

    Compiled inside the checkpoint, not around it: traced under the checkpoint, a block may have no side
    effects, and its attention records the ACP statistics on the module (``record_acp_stats``, which the
    trainer sets), so Dynamo gave up on the whole block and it ran eagerly at every step.
    """
    blocks = model.blocks
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"model.blocks must be an nn.ModuleList, got {type(blocks).__name__}")
    if compile:
        for block in blocks:
            compile_block(block, cuda_graphs)
    if activation_checkpointing:
        checkpoint_blocks(model)
    if d.distributed:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        for i, block in enumerate(blocks):
            # The last block's parameters are needed again at once by the backward: keep them gathered.
            fully_shard(block, mp_policy=mp, reshard_after_forward=i < len(blocks) - 1)
        fully_shard(model, mp_policy=mp)
    return model
