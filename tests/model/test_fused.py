"""FoxLM.fused_projections: each block's projections of x as one GEMM on stacked weights give the logits of
the separate projections, full forward and decoding, for every variant; the stacked copies never outlive it."""

import contextlib

import pytest
import torch

from foxacp.model import FoxLM, ModelConfig
from foxacp.model.config import VARIANTS
from foxacp.ops.config import interpreting


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


@torch.no_grad()
def test_decode_steps_compute_the_forget_gate_as_a_sum_of_products_with_the_same_values(monkeypatch):
    """Inside fused_projections, up to 16 rows take log f as a float32 sum of products (one fusable reduction on a
    GPU) and equal F.linear's to float32 rounding; more rows keep F.linear."""
    import foxacp.model.attention as attention

    gemvs = []
    linear = attention.F.linear
    monkeypatch.setattr(attention.F, "linear", lambda *a: gemvs.append(a[0].shape) or linear(*a))
    attn = model_of("fox_pro").half().blocks[0].attn
    few, many = torch.randn(3, 1, 64).half() * 4, torch.randn(17, 1, 64).half()
    plain = attn.log_fgate(few)
    assert len(gemvs) == 1
    attn.fused_in = torch.zeros(1, 64).half()  # set (to the stacked weights) by fused_projections
    fused = attn.log_fgate(few)
    assert len(gemvs) == 1 and fused.dtype == torch.float32
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-6)
    attn.log_fgate(many)
    assert len(gemvs) == 2


@pytest.mark.skipif(not interpreting(), reason="a CPU model: the kernel runs here only under the interpreter")
@torch.no_grad()
def test_half_precision_decode_steps_run_the_few_row_kernel(monkeypatch):
    """In fp16 a decode step's GEMMs (projections, W_o, the MLP, the LM head) go to the few-row kernel, whose
    logits agree with the separate projections' to fp16 rounding; the prefill's many rows stay on F.linear."""
    import foxacp.ops.skinny as skinny

    shapes = []
    kernel = skinny.skinny_partials_op
    monkeypatch.setattr(skinny, "skinny_partials_op", lambda x, w: shapes.append(x.shape[0]) or kernel(x, w))
    model = model_of("fox_pro").half()
    ids = torch.randint(64, (3, 23))
    steps = {}
    for fused in (False, True):
        cache = model.new_cache(3, 30)
        with model.fused_projections() if fused else contextlib.nullcontext():
            steps[fused] = [model(ids[:, :20], cache=cache)] + [model(ids[:, i : i + 1], cache=cache) for i in (20, 21)]
    assert shapes == [3] * 2 * (4 * len(model.blocks) + 1)  # per step: 2 per attention, 2 per MLP, the head
    for a, b in zip(steps[True], steps[False], strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=2e-3, rtol=2e-3)


@pytest.mark.gpu
@torch.no_grad()
def test_bf16_gpu_decode_with_the_few_row_kernel_compiled_and_eager():
    """On the GPU in bf16: decode steps with fused projections (the few-row kernel), eager and with compiled
    blocks, against the separate cuBLAS projections, within bf16 rounding of the logits."""
    from foxacp.infer.graph import compiled_block_step

    model = model_of("fox_pro").cuda().to(torch.bfloat16)
    ids = torch.randint(64, (3, 40), device="cuda")
    logits = {}
    for mode in ("separate", "fused", "compiled"):
        cache = model.new_cache(3, 48)
        run_block = compiled_block_step() if mode == "compiled" else None
        with model.fused_projections() if mode != "separate" else contextlib.nullcontext():
            model(ids[:, :32], cache=cache)
            steps = [model(ids[:, i : i + 1], cache=cache, run_block=run_block) for i in range(32, 40)]
        logits[mode] = torch.cat(steps, 1)
    scale = logits["separate"].float().abs().max().item()
    for mode in ("fused", "compiled"):
        torch.testing.assert_close(logits[mode].float(), logits["separate"].float(), atol=2e-2 * scale, rtol=0)


@torch.no_grad()
def test_the_static_bound_is_computed_once_on_entry_and_dropped_on_exit(monkeypatch):
    """Decoding inside fused_projections reads FoX Pro's bound from its copy made on entry: the gains' reduction is
    not part of every step."""
    from foxacp.model.attention import ForgettingAttention

    model = model_of("fox_pro")
    ids = torch.randint(64, (2, 9))
    expected = [b.attn.qk_bound() for b in model.blocks]
    cache, plain = model.new_cache(2, 12), model(ids)
    with model.fused_projections():
        for b, u in zip(model.blocks, expected, strict=True):
            torch.testing.assert_close(b.attn.fixed_bound, u, rtol=0, atol=0)

        def recomputed(self):
            raise AssertionError("the bound was recomputed inside fused_projections")

        monkeypatch.setattr(ForgettingAttention, "qk_bound", recomputed)
        steps = [model(ids[:, :7], cache=cache)] + [model(ids[:, i : i + 1], cache=cache) for i in (7, 8)]
    torch.testing.assert_close(torch.cat(steps, 1), plain, atol=1e-5, rtol=1e-5)
    assert all(b.attn.fixed_bound is None for b in model.blocks)
    fox = model_of("fox")
    with fox.fused_projections():  # no QK-norm, no static bound: the op derives U from the data
        assert all(b.attn.fixed_bound is None for b in fox.blocks)
