"""build_optimizer: fused AdamW on CUDA (one kernel instead of foreach's passes), the default elsewhere."""

import dataclasses

import pytest
import torch
from torch import nn

from foxacp.train.config import TrainConfig
from foxacp.train.loop import train
from foxacp.train.metrics import read_log
from foxacp.train.optim import build_optimizer, param_groups


def _model(device: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(37, 24), nn.LayerNorm(24), nn.Linear(24, 37)).to(device)


def _steps(opt: torch.optim.Optimizer, model: nn.Module, n: int = 3) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(n):
        ids = torch.randint(0, 37, (5, 7), generator=gen).to(next(model.parameters()).device)
        model(ids).float().logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_cpu_keeps_the_default_implementation():
    opt = build_optimizer(_model("cpu"), TrainConfig())
    assert all(not g["fused"] for g in opt.param_groups)


@pytest.mark.gpu
def test_cuda_fused_matches_foreach():
    cfg = TrainConfig()
    fused_model, ref_model = _model("cuda"), _model("cuda")
    fused = build_optimizer(fused_model, cfg)
    assert all(g["fused"] for g in fused.param_groups)
    ref = torch.optim.AdamW(
        param_groups(ref_model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps, foreach=True
    )
    _steps(fused, fused_model)
    _steps(ref, ref_model)
    for a, b in zip(fused_model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_cuda_resume_with_the_fused_optimizer_matches_the_uninterrupted_run(small_config, tmp_path):
    """The fused AdamW's state (its step is a device tensor) goes through a checkpoint and back: a run resumed at
    step 4 logs the uninterrupted run's losses."""

    def losses(run_dir):
        return {r["step"]: r["loss"] for r in read_log(run_dir) if r["kind"] == "train"}

    straight = small_config("ckpt_every=4", "device=cuda", "compile=false", out=tmp_path / "straight")
    train(straight)
    resumed = dataclasses.replace(straight, out=str(tmp_path / "resumed"))
    train(resumed, resume=straight.run_dir / "checkpoints" / "step_000004")
    full, second = losses(straight.run_dir), losses(resumed.run_dir)
    assert sorted(second) == [5, 6, 7, 8]
    for step in second:
        assert second[step] == pytest.approx(full[step], rel=1e-6), step
