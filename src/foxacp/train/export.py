"""Load a trained model from a run directory, and export its log forget gates on held-out text."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from foxacp.model import FoxLM, ModelConfig

from .checkpoint import CheckpointError, load_weights, read_meta, resolve_checkpoint
from .config import TrainConfig


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[FoxLM, TrainConfig, Path]:
    """The model of a run's latest checkpoint (or of a checkpoint directory), in eval mode on ``device``.

    Returns (model, the run's TrainConfig, checkpoint directory). Raises CheckpointError when there is
    no usable checkpoint or it does not fit the model it records.
    """
    ckpt = resolve_checkpoint(run_dir)
    meta = read_meta(ckpt)
    cfg = TrainConfig.from_dict(meta["train_config"])
    mcfg = ModelConfig(**meta["model_config"])
    model = FoxLM(mcfg)
    try:
        model.load_state_dict(load_weights(ckpt))
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt} does not fit its model config: {e}") from None
    return model.to(device).eval(), cfg, ckpt


def export_gates(
    run_dir: str | Path,
    out: str | Path,
    *,
    batch_size: int = 1,
    seq_len: int | None = None,
    device: str = "cpu",
) -> tuple[int, ...]:
    """Run ``model.forget_gates`` on the first held-out windows and save them to ``out`` (safetensors).

    The file holds "log_fgate" (L, B, T, H) float32 and "input_ids" (B, T) int64. ``seq_len`` defaults
    to the run's context. Returns the gates' shape.
    """
    from foxacp.data import build_tokenizer, load_corpus, prepare_tokens, validation_batches

    model, cfg, ckpt = load_run_model(run_dir, device)
    seq_len = seq_len or cfg.seq_len
    cache_dir = Path(cfg.cache_dir).expanduser()
    docs = load_corpus(cfg.corpus)
    tokenizer = build_tokenizer(cfg.tokenizer, corpus=docs, cache_dir=cache_dir)
    cache = prepare_tokens(docs, tokenizer, cache_dir, progress=False)
    (batch,) = validation_batches(cache.val, seq_len, batch_size, 1)
    ids = batch["input_ids"]
    gates = model.forget_gates(ids.to(device))
    save_file(
        {"log_fgate": gates.float().cpu().contiguous(), "input_ids": ids.contiguous()},
        str(out),
        metadata={"checkpoint": str(ckpt), "corpus": cfg.corpus, "tokenizer": cfg.tokenizer},
    )
    return tuple(gates.shape)
