"""``foxacp export-hf``: a trained foxacp model as a transformers directory."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from foxacp.data.tokenizer import ByteTokenizer, TokenizersTokenizer, save_tokenizer
from foxacp.infer import load
from foxacp.io import atomic_write
from foxacp.train.checkpoint import CheckpointError

from .modeling import FoxForCausalLM


def export_hf(
    source: str | Path,
    out_dir: str | Path,
    *,
    eos_token_id: int | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Save ``foxacp.load(source)`` (a run, checkpoints or checkpoint directory) with ``save_pretrained``.

    out_dir receives config.json (FoxConfig, auto_map), generation_config.json, model.safetensors and the
    auto_map's module; ``AutoModelForCausalLM.from_pretrained(out_dir)`` (after ``import foxacp.hf``, or
    with trust_remote_code=True) and ``foxacp.load(out_dir)`` read it back. A run trained with a `tokenizers`
    tokenizer also gets it (tokenizer.json, tokenizer_config.json: ``AutoTokenizer.from_pretrained(out_dir)``).
    eos_token_id goes into the config (generate stops on it; default: the run's tokenizer's EOS where it has one);
    dtype: cast the weights first (default: as trained). Returns out_dir.

    Raises:
        CheckpointError: source holds no loadable model (see ``foxacp.load``).
        ValueError: out_dir exists and is not an empty directory, unless overwrite; eos_token_id outside the
            vocabulary.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"out_dir {out} exists and is not empty (overwrite=True / --overwrite replaces its files)")
    if _holds_training(out) or Path(source).resolve().is_relative_to(out.resolve()):
        raise ValueError(f"out_dir {out} holds a training run or checkpoint (or the source): it is never overwritten")
    model = load(source, dtype=dtype)
    vocab = model.config.vocab_size
    is_int = isinstance(eos_token_id, int) and not isinstance(eos_token_id, bool)
    if eos_token_id is not None and not (is_int and 0 <= eos_token_id < vocab):
        raise ValueError(f"eos_token_id must be an int in [0, {vocab}), got {eos_token_id!r}")
    tokenizer, context = _run_tokenizer(source)
    if eos_token_id is None and tokenizer is not None and 0 <= tokenizer.eos_id < vocab:
        eos_token_id = tokenizer.eos_id
    hf = FoxForCausalLM.from_foxlm(model, eos_token_id=eos_token_id)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("model*.safetensors"), out / "model.safetensors.index.json"]:
        old.unlink(missing_ok=True)  # a stale shard index would outrank the new weights
    hf.save_pretrained(out)
    if isinstance(tokenizer, TokenizersTokenizer):
        save_tokenizer(tokenizer, out / "tokenizer.json")
        eos = tokenizer.tokenizer.id_to_token(tokenizer.eos_id)
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos, "model_max_length": context}
        atomic_write(out / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
    return out


def _holds_training(path: Path) -> bool:
    """Whether ``path`` is a run directory or a checkpoint, or lies in one (a run's checkpoints/step_N/...): an
    export must not write over either."""
    for p in (path, *path.resolve().parents[:2]):
        if (p / "meta.json").is_file() or (p / "log.jsonl").is_file() or (p / "checkpoints").is_dir():
            return True
    return False


def _run_tokenizer(source: str | Path) -> tuple[TokenizersTokenizer | ByteTokenizer | None, int]:
    """The tokenizer the source trained with and its context, or (None, 0) where it cannot be had (a transformers
    directory, or a BPE run from before runs kept their tokenizer whose training corpus is gone)."""
    from foxacp.eval.report import run_tokenizer

    try:
        return run_tokenizer(source)
    except (CheckpointError, OSError, ValueError, KeyError):
        return None, 0
