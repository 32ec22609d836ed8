"""``foxacp.load``: a trained model from what training leaves on disk."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from foxacp.model import FoxLM, ModelConfig
from foxacp.train.checkpoint import CheckpointError, load_weights, read_meta, resolve_checkpoint


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str, a torch.device or None, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device {device!r} is not a device name ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but no CUDA GPU is available")
    return dev


def load(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> FoxLM:
    """The trained model stored at ``path``, in eval mode.

    ``path`` is a run directory (its ``checkpoints/latest`` checkpoint is loaded), its ``checkpoints``
    folder, one checkpoint directory (``step_NNNNNN`` with meta.json; every file is checked against the
    sizes and sha256 sums in meta.json before the weights are read), or a Hugging Face directory written
    by ``foxacp.hf`` (``save_pretrained``, ``foxacp export-hf``; read without transformers). ``device``:
    where the weights go (default CPU); ``dtype``: a floating dtype to cast the parameters to (default
    float32 whatever was saved: training checkpoints hold float32, and a Hugging Face directory saved in bf16
    is read up to float32; pass ``dtype=torch.bfloat16`` to keep it).

    Raises:
        CheckpointError: ``path`` is neither a run nor a checkpoint directory (the message says what was
            looked for), or the checkpoint is incomplete, corrupt, or does not fit the model it records.
        TypeError: ``device`` or ``dtype`` of the wrong type.
        ValueError: an unknown device name, or CUDA asked for without a GPU.
    """
    dev = _device(device)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")
    # Each kind of directory is told apart by the files it holds: a Hugging Face directory by its config.json
    # of model_type "foxacp" (a run directory's config.json is a TrainConfig).
    model = _load_hf_dir(Path(path))
    if model is not None:
        return model.to(device=dev, dtype=dtype).eval()
    ckpt = resolve_checkpoint(path)
    meta = read_meta(ckpt)
    try:
        model = FoxLM(ModelConfig(**meta["model_config"]))
        model.load_state_dict(load_weights(ckpt))
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {ckpt} does not fit the model config it records: {e}") from None
    return model.to(device=dev, dtype=dtype).eval()


HF_PREFIX = "model."  # FoxForCausalLM's name for its FoxLM (foxacp.hf), read here without transformers


def _load_hf_dir(path: Path) -> FoxLM | None:
    """The FoxLM of a ``save_pretrained`` directory (one or several safetensors files), or None if ``path`` is not one.

    Raises CheckpointError for a config that is not a valid ModelConfig, or weights whose keys or shapes
    do not fit it (the message names them).
    """
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("model_type") != "foxacp":
        return None
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    try:
        model = FoxLM(ModelConfig(**{k: v for k, v in config.items() if k in names}))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}/config.json is not a valid foxacp model config: {e}") from None
    index = path / "model.safetensors.index.json"
    # One model.safetensors outranks a shard index, as in transformers (a folder saved over may keep both).
    shards = ["model.safetensors"]
    if index.exists() and not (path / "model.safetensors").exists():
        shards = json.loads(index.read_text())["weight_map"].values()
    files = sorted(set(shards))
    state = {}
    for name in files:
        if not (path / name).exists():
            raise CheckpointError(f"{path} has a foxacp config.json but no {name}")
        state.update(load_file(path / name))
    unknown = sorted(k for k in state if not k.startswith(HF_PREFIX))
    weights = {k[len(HF_PREFIX) :]: v for k, v in state.items() if k.startswith(HF_PREFIX)}
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights of the wrong shape for its config: {e}") from None
    unknown += [HF_PREFIX + k for k in result.unexpected_keys]
    if unknown or result.missing_keys:
        raise CheckpointError(f"{path}: unknown weights {unknown}, missing weights {result.missing_keys}")
    return model
