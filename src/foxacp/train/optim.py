"""AdamW with weight decay on weights and embeddings only, and the token-based learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split parameters into a decayed and a non-decayed group.

    Decayed: the ``weight`` of every ``nn.Linear`` and ``nn.Embedding`` (projection matrices, the
    embedding and the LM head). Not decayed: everything else (norm gains, biases, the forget-gate bias).
    Parameters that do not require grad are left out.
    """
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if name == "weight" and isinstance(module, (nn.Linear, nn.Embedding)):
                decay.append(p)
            else:
                no_decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW(betas, eps) over :func:`param_groups`; the learning rate is set each step by :func:`lr_at`.

    On CUDA the fused implementation (one kernel over all parameters, also for FSDP2's DTensors, as torchtitan
    uses it) replaces the default foreach one, which passes over the weights and moments ~10 times."""
    groups = param_groups(model, cfg.weight_decay)
    fused = all(p.is_cuda for g in groups for p in g["params"]) or None
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps, fused=fused)


def apply_settings(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
    """Set ``cfg``'s betas, eps and weight decay (on the decayed group, the first of :func:`param_groups`) on an
    optimizer whose loaded state dict brought a checkpoint's hyperparameters with it (a resume that changes them)."""
    for group, decay in zip(optimizer.param_groups, (cfg.weight_decay, 0.0), strict=True):
        group.update(betas=tuple(cfg.betas), eps=cfg.adam_eps, weight_decay=decay)


def lr_at(tokens: int, cfg: TrainConfig) -> float:
    """Learning rate after ``tokens`` training tokens: linear warmup over ``warmup_tokens``, then cosine
    from ``lr`` to ``lr * min_lr_ratio`` at ``cfg.total_tokens`` (and flat after it).

    The optimizer step that completes ``tokens`` uses ``lr_at(tokens)``, so the first step's rate is
    ``lr * global_batch_tokens / warmup_tokens``, not 0. A run shorter than its warmup ends still warming up,
    below ``lr`` (the trainer warns at its start).
    """
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    if tokens < cfg.warmup_tokens:
        return peak * tokens / cfg.warmup_tokens
    span = cfg.total_tokens - cfg.warmup_tokens
    progress = min(1.0, (tokens - cfg.warmup_tokens) / span) if span > 0 else 1.0
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
