"""``foxacp export-hf``: a trained foxacp model as a transformers directory."""

from __future__ import annotations

from pathlib import Path

import torch

from foxacp.infer import load

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
    with trust_remote_code=True) and ``foxacp.load(out_dir)`` read it back. eos_token_id goes into the config
    (generate stops on it); dtype: cast the weights first (default: as trained). Returns out_dir.

    Raises:
        CheckpointError: source holds no loadable model (see ``foxacp.load``).
        ValueError: out_dir exists and is not an empty directory, unless overwrite; eos_token_id outside the
            vocabulary.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"out_dir {out} exists and is not empty (overwrite=True / --overwrite replaces its files)")
    model = load(source, dtype=dtype)
    vocab = model.config.vocab_size
    is_int = isinstance(eos_token_id, int) and not isinstance(eos_token_id, bool)
    if eos_token_id is not None and not (is_int and 0 <= eos_token_id < vocab):
        raise ValueError(f"eos_token_id must be an int in [0, {vocab}), got {eos_token_id!r}")
    hf = FoxForCausalLM.from_foxlm(model, eos_token_id=eos_token_id)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("model*.safetensors"), out / "model.safetensors.index.json"]:
        old.unlink(missing_ok=True)  # a stale shard index would outrank the new weights
    hf.save_pretrained(out)
    return out
