"""Held-out loss: per-token losses against a hand computation, evaluate's means and buckets, ACP's effect."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from foxacp.data import IGNORE_INDEX
from foxacp.eval import evaluate, position_buckets, position_curve, token_losses
from foxacp.model import FoxLM, ModelConfig

TINY = ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=2, attn_backend="torch")


def test_token_losses_match_log_softmax_by_hand():
    torch.manual_seed(0)
    model = FoxLM(TINY).eval()
    ids = torch.randint(0, 64, (2, 37))
    labels = torch.roll(ids, -1, 1)
    labels[0, 5] = IGNORE_INDEX
    with torch.no_grad():
        got = token_losses(model, {"input_ids": ids, "labels": labels})
        logp = model(ids).double().log_softmax(-1)
    assert got.shape == (2, 37) and got.dtype == torch.float32 and got[0, 5] == 0
    for b, t in [(0, 0), (0, 36), (1, 17)]:
        assert got[b, t].item() == pytest.approx(-logp[b, t, labels[b, t]].item(), rel=1e-5)


def test_evaluate_means_over_target_tokens_and_positions():
    torch.manual_seed(1)
    model = FoxLM(TINY)
    batches = []
    for _ in range(3):
        ids = torch.randint(0, 64, (2, 16))
        labels = torch.roll(ids, -1, 1)
        labels[:, -3:] = IGNORE_INDEX  # the last three positions take no loss
        batches.append({"input_ids": ids, "labels": labels})
    ev = evaluate(model, batches, device=torch.device("cpu"), buckets=4)
    assert model.training  # back in train mode
    with torch.no_grad():
        model.eval()
        losses = torch.cat([token_losses(model, b) for b in batches]).double()  # (6, 16)
    assert ev["eval_tokens"] == 6 * 13
    assert ev["loss"] == pytest.approx(losses[:, :13].mean().item(), rel=1e-6)
    assert ev["bucket_size"] == 4 and ev["position_loss"][0] == pytest.approx(losses[:, :4].mean().item(), rel=1e-4)
    assert ev["position_loss"][3] == pytest.approx(losses[:, 12].mean().item(), rel=1e-4)  # 1 of 4 positions
    with pytest.raises(ValueError, match="at least one batch"):
        evaluate(model, [], device=torch.device("cpu"), buckets=4)


def test_acp_on_and_off_agree_within_the_eps_bound():
    """Same weights, one fixed batch: pruning at eps = e^-10 moves the loss by far less than 1e-4."""
    torch.manual_seed(0)
    exact = ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=2, acp=False, attn_backend="torch")
    pruned = dataclasses.replace(exact, acp=True, record_acp_stats=True)
    model_exact, model_pruned = FoxLM(exact), FoxLM(pruned)
    model_pruned.load_state_dict(model_exact.state_dict())
    ids = torch.randint(0, 64, (2, 512))
    batch = {"input_ids": ids, "labels": torch.roll(ids, -1, 1)}
    with torch.no_grad():
        loss_exact = token_losses(model_exact, batch).mean().item()
        loss_pruned = token_losses(model_pruned, batch).mean().item()
    saving = [s.flop_saving for s in model_pruned.acp_stats()]
    assert min(saving) > 0.3, saving  # forget gates ~0.5 at init: most far tiles are pruned
    assert abs(loss_pruned - loss_exact) < 1e-4, (loss_pruned, loss_exact)


def test_position_buckets():
    sums, counts = torch.arange(8.0), torch.tensor([1.0, 1, 1, 1, 2, 2, 0, 0])
    out = position_buckets(sums, counts, 4)
    assert out["bucket_size"] == 2
    assert out["position_loss"] == [0.5, 2.5, 2.25, None]
    assert position_buckets(torch.ones(6), torch.ones(6), 4)["bucket_size"] == 2  # 3 buckets of 2


def test_position_curve_centres_buckets_and_marks_empty_ones():
    xs, ys = position_curve([1.5, None, 0.5], 4)
    assert xs == [2.0, 6.0, 10.0] and ys[0] == 1.5 and math.isnan(ys[1]) and ys[2] == 0.5


def test_evaluate_leaves_the_model_in_the_mode_it_found():
    import torch

    from foxacp.eval import evaluate
    from foxacp.model import FoxLM, ModelConfig

    model = FoxLM(ModelConfig(vocab_size=32, n_layers=1, d_model=16, n_heads=2, attn_backend="torch")).eval()
    ids = torch.randint(32, (1, 9))
    evaluate(model, [{"input_ids": ids[:, :-1], "labels": ids[:, 1:]}], device=torch.device("cpu"), buckets=2)
    assert not model.training


def test_moving_average_spans_exactly_its_window():
    from foxacp.eval.plot import moving_average

    assert moving_average([0.0, 1.0, 2.0, 3.0, 4.0], 4)[2] == (0.0 + 1.0 + 2.0 + 3.0) / 4  # 2 back, 1 ahead
    assert moving_average([0.0, 1.0, 2.0, 3.0, 4.0], 3)[2] == 2.0
