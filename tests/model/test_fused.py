"""FoxLM.fused_projections: each block's projections of x as one GEMM on stacked weights give the logits of
the separate projections, full forward and decoding, for every variant; the stacked copies never outlive it."""

import pytest
import torch

from foxacp.model import FoxLM, ModelConfig
from foxacp.model.config import VARIANTS


def model_of(variant: str) -> FoxLM:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, variant=variant, attn_backend="torch"
    )
    return FoxLM(cfg).eval()


@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_fused_projections_give_the_separate_projections_logits(variant):
    model = model_of(variant)
    ids = torch.randint(64, (3, 23))
    separate, cache = model(ids), model.new_cache(3, 30)
    separate_steps = [model(ids[:, :20], cache=cache)] + [model(ids[:, i : i + 1], cache=cache) for i in range(20, 23)]
    with model.fused_projections():
        assert all(b.attn.fused_in is not None and b.mlp.fused_in is not None for b in model.blocks)
        fused, cache = model(ids), model.new_cache(3, 30)
        fused_steps = [model(ids[:, :20], cache=cache)] + [model(ids[:, i : i + 1], cache=cache) for i in range(20, 23)]
    torch.testing.assert_close(fused, separate, atol=1e-5, rtol=1e-5)
    for a, b in zip(fused_steps, separate_steps, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert all(b.attn.fused_in is None and b.mlp.fused_in is None for b in model.blocks)


def test_the_stacked_copies_are_dropped_on_error_and_carry_no_gradient():
    model = model_of("fox_pro")
    with pytest.raises(RuntimeError, match="inside"), model.fused_projections():
        assert not model.blocks[0].attn.fused_in.requires_grad
        raise RuntimeError("inside")
    assert all(b.attn.fused_in is None and b.mlp.fused_in is None for b in model.blocks)
