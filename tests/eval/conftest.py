"""Shared helpers of the eval tests: a tiny model and the byte tokenizer in place of a trained run, so that
``run_eval`` / ``run_analyze`` run in seconds."""

from __future__ import annotations

import pytest
import torch

from foxacp.data import build_tokenizer
from foxacp.model import FoxLM, ModelConfig


@pytest.fixture
def tiny_loader(monkeypatch):
    """Patch the run loader of eval and analyze; returns a function that sets the model (config overrides)."""
    import foxacp.eval.analyze as analyze
    import foxacp.eval.report as report

    state = {}

    def make(train_len: int = 64, **overrides):
        torch.manual_seed(0)
        cfg = dict(vocab_size=320, n_layers=2, d_model=64, n_heads=4, variant="fox_pro", attn_backend="torch")
        state["model"] = FoxLM(ModelConfig(**{**cfg, **overrides})).eval()
        state["train_len"] = train_len
        return state["model"]

    def load(path, device, dtype="float32"):
        return state["model"], build_tokenizer("byte"), state["train_len"]

    monkeypatch.setattr(analyze, "load_model_and_tokenizer", load)
    monkeypatch.setattr(report, "load_model_and_tokenizer", load)
    return make
