"""A checkpoint write that fails (disk full) removes its temporary folder: a process that goes on (a notebook, a
sweep) would otherwise keep the half-written checkpoint on the disk (remove_stale_temps spares live processes')."""

from __future__ import annotations

import errno

import pytest
import torch

from foxacp.io import remove_stale_temps
from foxacp.model import FoxLM, ModelConfig
from foxacp.train import checkpoint as ck
from foxacp.train.checkpoint import resolve_checkpoint, save_checkpoint
from foxacp.train.config import TrainConfig
from foxacp.train.distributed import Dist
from foxacp.train.optim import build_optimizer

ONE = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), distributed=False)
MCFG = ModelConfig(vocab_size=64, n_layers=1, d_model=16, n_heads=2, attn_backend="torch")


def _save(root, step, model, opt):
    return save_checkpoint(
        root, step, model, opt, tokens=step, loader_state={}, train_config=TrainConfig(), model_config=MCFG, d=ONE
    )


def test_a_checkpoint_write_that_fails_leaves_no_temporary(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = FoxLM(MCFG)
    opt = build_optimizer(model, TrainConfig())
    _save(tmp_path, 1, model, opt)
    real = torch.save

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(ck.torch, "save", disk_full)
        with pytest.raises(OSError, match="No space"):
            _save(tmp_path, 2, model, opt)
    assert torch.save is real
    root = tmp_path / "checkpoints"
    assert resolve_checkpoint(tmp_path) == root / "step_000001"
    remove_stale_temps(root)  # what the next train() in this process does at its start
    left = sorted(p.name for p in root.iterdir() if p.name.startswith("."))
    assert left == [], f"partial checkpoint left behind: {left}"
