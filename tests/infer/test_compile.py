"""The one-token decode step with compiled blocks: each block is one graph (the decode kernel is an opaque
custom op), one graph serves every layer, and the logits are eager's. The Triton decode kernel runs through
the interpreter; the test backend runs the traced graph as it is (no C compiler needed)."""

import importlib

import pytest
import torch

from foxacp.model import FoxLM, ModelConfig
from foxacp.ops import set_value_checks
from foxacp.testing import counting_block_step


@pytest.mark.parametrize("evict", [False, True])
def test_compiled_blocks_are_one_graph_and_match_eager(evict):
    """As generate(compile=True) decodes: compiled blocks with fused projections, against plain eager."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layers=3, d_model=64, n_heads=4, n_kv_heads=2, attn_backend="triton")
    model = FoxLM(cfg).eval()
    eager_cache, compiled_cache = model.new_cache(2, 80, evict=evict), model.new_cache(2, 80, evict=evict)
    prompts = torch.randint(64, (2, 37))
    run_block, graphs = counting_block_step()
    previous = set_value_checks(False)
    try:
        with torch.no_grad():
            model(prompts, cache=eager_cache)
            model(prompts, cache=compiled_cache)
            tokens = prompts[:, -1]
            for _ in range(4):
                want = model(tokens[:, None], cache=eager_cache)[:, -1]
                with model.fused_projections():
                    got = model(tokens[:, None], cache=compiled_cache, run_block=run_block)[:, -1]
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
                tokens = want.argmax(-1)
    finally:
        set_value_checks(previous)
    assert len(graphs) == 1  # traced from the first block, replayed for the other layers and steps
    torch.testing.assert_close(compiled_cache.lengths, eager_cache.lengths)
    for a, b in zip(compiled_cache.layers, eager_cache.layers, strict=True):
        torch.testing.assert_close(a.c_last, b.c_last)
        torch.testing.assert_close(a.shift_k, b.shift_k)


@pytest.mark.parametrize("pdl", [False, True])
def test_generate_compiles_with_pdl_where_our_kernels_use_it(monkeypatch, pdl):
    # Programmatic dependent launch pays only with Inductor's kernels and ours both on it (experiment 069), so
    # generate asks for Inductor's exactly where ops.config.dependent_launch turns on ours.
    gen = importlib.import_module("foxacp.infer.generate")  # the module (the package exports the function)
    asked = []
    monkeypatch.setattr(gen, "dependent_launch_available", lambda device: pdl)
    monkeypatch.setattr(gen, "compiled_block_step", lambda mode=None, *, pdl: asked.append(pdl))  # eager blocks
    torch.manual_seed(0)
    model = FoxLM(ModelConfig(vocab_size=64, n_layers=2, d_model=32, n_heads=2)).eval()
    gen.generate(model, torch.randint(64, (1, 5)), 3, compile=True)
    assert asked == [pdl]
