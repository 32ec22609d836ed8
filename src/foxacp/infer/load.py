"""``foxacp.load``: a trained model from what training leaves on disk."""

from __future__ import annotations

from pathlib import Path

import torch

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
    folder, or one checkpoint directory (``step_NNNNNN`` with meta.json). Every file is checked against
    the sizes and sha256 sums in meta.json before the weights are read. ``device``: where the weights go
    (default CPU); ``dtype``: a floating dtype to cast the parameters to (default: as saved, float32).

    Raises:
        CheckpointError: ``path`` is neither a run nor a checkpoint directory (the message says what was
            looked for), or the checkpoint is incomplete, corrupt, or does not fit the model it records.
        TypeError: ``device`` or ``dtype`` of the wrong type.
        ValueError: an unknown device name, or CUDA asked for without a GPU.
    """
    dev = _device(device)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")
    # Each kind of directory is told apart by the files it holds; a Hugging Face model directory
    # (config.json + model.safetensors, no checkpoints/) is the next kind to recognise here.
    ckpt = resolve_checkpoint(path)
    meta = read_meta(ckpt)
    try:
        model = FoxLM(ModelConfig(**meta["model_config"]))
        model.load_state_dict(load_weights(ckpt))
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {ckpt} does not fit the model config it records: {e}") from None
    return model.to(device=dev, dtype=dtype).eval()
