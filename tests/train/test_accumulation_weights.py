"""Gradient accumulation gives the gradient of the per-token mean loss over the whole batch, also when micro-batches
hold very different numbers of target tokens (a mean of micro-batch means would weight them wrongly; found by
mutation testing: tests/train/test_accumulation.py's micro-batches differ by too few labels to tell)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from foxacp.data import IGNORE_INDEX
from foxacp.model import FoxLM
from foxacp.model.config import ModelConfig
from foxacp.train import loop


def test_accumulated_gradient_is_the_global_per_token_mean():
    torch.manual_seed(0)
    model = FoxLM(
        ModelConfig(variant="fox", vocab_size=64, n_layers=1, d_model=32, n_heads=2, attn_backend="torch", init_std=0.2)
    )
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(64, (4, 16), generator=g)
    labels = torch.randint(64, (4, 16), generator=g)
    labels[2:, 2:] = IGNORE_INDEX  # micro-batch 2 keeps 4 targets, micro-batch 1 all 32
    micro = [{"input_ids": ids[:2], "labels": labels[:2]}, {"input_ids": ids[2:], "labels": labels[2:]}]
    n_targets = torch.tensor(float((labels != IGNORE_INDEX).sum()))

    # The reference: plain logits and F.cross_entropy over the whole batch, mean over its target tokens.
    model.zero_grad(set_to_none=True)
    logits = model(ids)
    ref_loss = F.cross_entropy(logits.reshape(-1, 64).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    ref_loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad(set_to_none=True)
    s = SimpleNamespace(
        model=model,
        d=SimpleNamespace(device=torch.device("cpu"), world_size=1),
        autocast=contextlib.nullcontext(),
        graphs=False,
    )
    meter = SimpleNamespace(add=lambda stats: None)
    loss_sum = loop._forward_backward(s, micro, n_targets, meter)
    assert float(loss_sum) / float(n_targets) == __import__("pytest").approx(float(ref_loss), rel=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-4, atol=1e-6, msg=n)
