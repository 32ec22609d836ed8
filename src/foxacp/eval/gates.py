"""Record a trained model's log forget gates on held-out text (the input of the attention benchmark)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save

from foxacp.data import prepare_data, validation_batches
from foxacp.infer import load
from foxacp.io import atomic_write
from foxacp.train.checkpoint import read_meta, resolve_checkpoint
from foxacp.train.config import TrainConfig


def export_gates(
    run_dir: str | Path,
    out: str | Path,
    *,
    batch_size: int = 1,
    seq_len: int | None = None,
    device: str = "cpu",
) -> tuple[int, ...]:
    """Run ``model.forget_gates`` on the first held-out windows of the run's corpus and save them to
    ``out`` (safetensors).

    ``run_dir``: a run or checkpoint directory (see :func:`foxacp.load`). The file holds "log_fgate"
    (L, B, T, H) float32 and "input_ids" (B, T) int64. ``seq_len`` defaults to the run's context. Returns
    the gates' shape.

    Raises:
        CheckpointError: no usable checkpoint at ``run_dir``.
        ValueError: a bad ``device`` (or CUDA without a GPU), a held-out split too short for the batch, or an
            ``out`` that is a folder or does not end in .safetensors.
        OSError: ``out`` cannot be written (e.g. its folder does not exist).
    """
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    out = Path(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out}: the folder {out.parent} does not exist")
    if out.is_dir():
        raise ValueError(f"cannot write {out}: it is a folder; give a file name ending in .safetensors")
    if out.suffix != ".safetensors":  # the readers (bench.gates) choose their loader by the suffix
        raise ValueError(f"the gates are written as safetensors: give --out a name ending in .safetensors, not {out}")
    model = load(run_dir, device=device)
    ckpt = resolve_checkpoint(run_dir)
    cfg = TrainConfig.from_dict(read_meta(ckpt, verify=False)["train_config"])
    _, cache = prepare_data(cfg.corpus, cfg.tokenizer, Path(cfg.cache_dir), progress=False)
    (batch,) = validation_batches(cache.val, cfg.seq_len if seq_len is None else seq_len, batch_size, 1)
    ids = batch["input_ids"]
    gates = model.forget_gates(ids.to(device))
    tensors = {"log_fgate": gates.float().cpu().contiguous(), "input_ids": ids.contiguous()}
    meta = {"checkpoint": str(ckpt), "corpus": cfg.corpus, "tokenizer": cfg.tokenizer}
    atomic_write(out, save(tensors, metadata=meta))  # complete or absent: a study's resumed call skips it if there
    return tuple(gates.shape)
