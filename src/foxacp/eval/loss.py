"""Held-out loss: per-token cross-entropy, the mean over a set of batches, and the loss by token position."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from foxacp.data import IGNORE_INDEX, Batch


def token_losses(model: nn.Module, batch: Batch) -> Tensor:
    """Per-token cross-entropy (B, T) float32 of ``model`` on ``batch``, 0 where the label is IGNORE_INDEX.

    ``batch`` holds "input_ids" and "labels" int64 (B, T) and optionally "cu_seqlens"/"max_seqlen"
    (packed documents), on the model's device. The model computes the losses itself (``FoxLM.forward`` with
    labels: the LM head and cross-entropy in chunks, float32 log-sum-exp, no full float32 logits).
    """
    return model(
        batch["input_ids"],
        cu_seqlens=batch.get("cu_seqlens"),
        max_seqlen=batch.get("max_seqlen"),
        labels=batch["labels"],
        ignore_index=IGNORE_INDEX,
    )


def position_buckets(loss_sum: Tensor, count: Tensor, buckets: int) -> dict[str, Any]:
    """Per-position sums (T,) -> mean loss in ``buckets`` equal spans of positions (fewer when T is
    smaller or not divisible). Returns {"position_loss": [n], "bucket_size": T // n}; empty buckets are None."""
    T = loss_sum.numel()
    n = max(1, min(buckets, T))
    while T % n:
        n -= 1
    s = loss_sum.double().cpu().view(n, -1).sum(1)
    c = count.double().cpu().view(n, -1).sum(1)
    return {
        "position_loss": [round(a / b, 5) if b > 0 else None for a, b in zip(s.tolist(), c.tolist(), strict=True)],
        "bucket_size": T // n,
    }


def _sum_over_ranks(x: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: list[Batch],
    *,
    device: torch.device,
    buckets: int,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, Any]:
    """Mean loss of ``model`` over ``batches`` and the loss by token position within the row.

    ``batches``: this process's batches (CPU or ``device``), all with the same T. Under torch.distributed
    (every rank calls it, e.g. an FSDP model) the sums are taken over all ranks. ``autocast`` wraps each
    forward (e.g. bf16). The model is put in eval mode, then back in the mode it was in.

    Returns {"loss", "eval_tokens", "position_loss": [n buckets], "bucket_size"} (see :func:`position_buckets`).
    Raises ValueError when ``batches`` is empty.
    """
    if not batches:
        raise ValueError("evaluate needs at least one batch")
    was_training = model.training
    model.eval()
    T = batches[0]["input_ids"].shape[1]
    pos_sum = torch.zeros(T, dtype=torch.float64, device=device)
    pos_count = torch.zeros(T, dtype=torch.float64, device=device)
    for batch in batches:
        batch = {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}
        with autocast or contextlib.nullcontext():
            loss = token_losses(model, batch)
        mask = batch["labels"] != IGNORE_INDEX
        pos_sum += (loss.double() * mask).sum(0)
        pos_count += mask.sum(0)
    _sum_over_ranks(pos_sum)
    _sum_over_ranks(pos_count)
    model.train(was_training)
    return {
        "loss": (pos_sum.sum() / pos_count.sum()).item(),
        "eval_tokens": int(pos_count.sum().item()),
        **position_buckets(pos_sum, pos_count, buckets),
    }
