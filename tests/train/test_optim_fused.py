"""build_optimizer: fused AdamW on CUDA (one kernel instead of foreach's passes), the default elsewhere."""

import pytest
import torch
from torch import nn

from foxacp.train.config import TrainConfig
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
