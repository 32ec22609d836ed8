"""GPU-only: the CUDA-graph decode step replays eager decoding, which matches a float64 full forward."""

import functools

import pytest
import torch

import foxacp
from foxacp.infer.graph import CUDAGraphStep, compiled_block_step
from foxacp.model import FoxLM
from foxacp.model.config import VARIANTS

from .models import tiny_model

pytestmark = pytest.mark.gpu


def model_of(variant: str) -> FoxLM:
    return tiny_model(variant, acp=True, backend=None, vocab=256, d_model=256, init_std=0.05)


def prefilled(model: FoxLM, rows: list[torch.Tensor], length: int):
    cache = model.new_cache(len(rows), length)
    for b, r in enumerate(rows):
        model(r[None].cuda(), cache=cache.rows(b))
    return cache


def logits_step(model: FoxLM, cache, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens[:, None], cache=cache)[:, -1].float()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_graph_step_replays_eager_logits_and_matches_float64(variant, dtype):
    cpu = model_of(variant)
    model = model_of(variant).cuda().to(dtype)
    gen = torch.Generator().manual_seed(1)
    rows = [torch.randint(256, (n,), generator=gen) for n in (300, 77, 1)]
    steps = torch.randint(256, (24, 3), generator=gen)
    eager_cache, graph_cache = prefilled(model, rows, 400), prefilled(model, rows, 400)
    graph = CUDAGraphStep(functools.partial(logits_step, model, graph_cache), graph_cache, steps[0].cuda(), None)
    reference = cpu.double()
    for i, tokens in enumerate(steps.cuda()):
        eager = logits_step(model, eager_cache, tokens)
        replay = graph(tokens).clone()
        torch.testing.assert_close(replay, eager, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-2)
        if i % 8 == 7:
            for b, r in enumerate(rows):
                full = reference(torch.cat([r, steps[: i + 1, b]])[None])[0, -1]
                err = (replay[b].double().cpu() - full).abs().max() / full.abs().max()
                assert err < (2e-3 if dtype == torch.float32 else 5e-2), (i, b, err)


@torch.no_grad()
def test_generate_with_and_without_graphs():
    model = model_of("fox_pro").cuda()
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(256, (n,), generator=gen) for n in (40, 100)]
    with_graph = foxacp.generate(model, prompts, 40, cuda_graph=True)
    eager = foxacp.generate(model, prompts, 40, cuda_graph=False)
    assert all(torch.equal(a, b) for a, b in zip(with_graph, eager, strict=True))
    kw = dict(temperature=1.0, top_p=0.9, seed=7, cuda_graph=True)
    first, again = foxacp.generate(model, prompts, 40, **kw), foxacp.generate(model, prompts, 40, **kw)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@torch.no_grad()
def test_compiled_step_in_a_graph_matches_eager():
    """The compiled one-token step, captured in a CUDA graph, gives eager's logits (teacher-forced: token
    choices at near ties may differ, so both steps are fed eager's greedy tokens)."""
    model = model_of("fox_pro").cuda()
    prompts = torch.randint(256, (2, 97), generator=torch.Generator().manual_seed(3)).cuda()
    eager_cache, graph_cache = model.new_cache(2, 160), model.new_cache(2, 160)
    model(prompts, cache=eager_cache)
    model(prompts, cache=graph_cache)
    tokens = model(prompts[:, -1:], cache=eager_cache)[:, -1].argmax(-1)
    model(prompts[:, -1:], cache=graph_cache)

    def logits(c, t, run_block=None):
        return model(t[:, None], cache=c, run_block=run_block)[:, -1].float()

    compiled = functools.partial(logits, graph_cache, run_block=compiled_block_step())
    step = CUDAGraphStep(compiled, graph_cache, tokens, None)
    for _ in range(24):
        want = logits(eager_cache, tokens)
        got = step(tokens)
        torch.testing.assert_close(got, want, atol=1e-4 * want.abs().max().item(), rtol=1e-4)
        tokens = want.argmax(-1)
