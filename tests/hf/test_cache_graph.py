"""The default FoxCache replays its one-token steps as a CUDA graph on CUDA (transformers' default path ran at 0.10x
foxacp.generate eager), capturing again after each growth. The CPU has no CUDA graph: a stand-in runs what a capture
runs (two warm-up steps ahead of the cache's length, a restore, the step) and replays eagerly, so the tests check
when captures happen, that they fit the buffers, and that the tokens stay foxacp.generate's."""

from __future__ import annotations

import pytest
import torch

import foxacp
from foxacp.model import FoxLM

pytest.importorskip("transformers")
from foxacp.hf import FoxCache, FoxForCausalLM  # noqa: E402
from foxacp.hf import cache as hf_cache  # noqa: E402
from foxacp.hf.modeling import CACHE_FIELD  # noqa: E402


class FakeGraphStep:
    """Runs what CUDAGraphStep runs when built (the warm-ups write two steps past each row's length); replays are
    eager. ``captures`` lists the cache buffers each capture was taken over."""

    captures: list[int] = []

    def __init__(self, step, cache, example, generator):
        saved = cache.snapshot()
        for _ in range(2):
            step(example.clone())  # an index past the buffers raises here, as it would fault on the GPU
        cache.restore(saved)
        self.step = step
        FakeGraphStep.captures.append(cache.layers[0].k.data_ptr())

    def __call__(self, tokens):
        return self.step(tokens)


@pytest.fixture
def graphed(monkeypatch):
    FakeGraphStep.captures = []
    monkeypatch.setattr(hf_cache, "CUDAGraphStep", FakeGraphStep)
    return FakeGraphStep.captures


def _cache(lm: FoxLM) -> FoxCache:
    cache = FoxCache(lm)
    cache.cuda_graph = True  # as on CUDA (the constructor refuses it on the CPU)
    return cache


def test_generate_captures_once_per_buffer_and_equals_foxacp_generate(tiny_config, monkeypatch, graphed):
    torch.manual_seed(3)
    lm = FoxLM(tiny_config(fgate_bias_init=-3.0)).eval()
    hf = FoxForCausalLM.from_foxlm(lm).eval()
    monkeypatch.setattr(hf_cache, "HEADROOM", 3)  # grows during the generation: 7 -> 14 -> 28 -> 56 slots
    prompts = torch.randint(1, 64, (2, 4))
    cache = _cache(lm)
    out = hf.generate(prompts, max_new_tokens=40, do_sample=False, cache=cache)
    assert torch.equal(out, torch.stack(foxacp.generate(lm, prompts, 40)))
    buffers = [cache.kv.layers[0].k.data_ptr()]
    assert cache.kv.max_len == 56 and len(graphed) == 4 and graphed[-1] == buffers[0]  # one capture per buffer
    assert len(set(graphed)) == 4


def test_a_step_that_fills_the_buffer_leaves_room_for_the_capture(tiny_config, monkeypatch, graphed):
    """With a graph the cache keeps one slot spare: the capture's warm-ups write two steps ahead."""
    torch.manual_seed(4)
    lm = FoxLM(tiny_config()).eval()
    hf = FoxForCausalLM.from_foxlm(lm).eval()
    monkeypatch.setattr(hf_cache, "HEADROOM", 1)
    prompts = torch.randint(1, 64, (1, 5))
    cache = _cache(lm)
    out = hf.generate(prompts, max_new_tokens=6, do_sample=False, cache=cache)
    assert torch.equal(out, torch.stack(foxacp.generate(lm, prompts, 6)))
    # 6 slots at the prompt; the first step grows them to 12 before capturing (without the spare slot, 6 would do
    # for the step and the capture's second warm-up would write slot 6).
    assert cache.kv.max_len == 12 and graphed == [cache.kv.layers[0].k.data_ptr()]


def test_no_graph_is_captured_where_autograd_records(tiny_config, graphed):
    torch.manual_seed(5)
    lm = FoxLM(tiny_config(attn_backend="torch")).eval()
    hf = FoxForCausalLM.from_foxlm(lm).eval()
    ids = torch.randint(1, 64, (1, 7))
    cache = _cache(lm)
    hf(ids[:, :6], **{CACHE_FIELD: cache})
    logits = hf(ids[:, 6:], **{CACHE_FIELD: cache}).logits  # grad mode: the eager forward, no capture
    assert not graphed and logits.requires_grad
    with torch.no_grad():
        full = hf(ids).logits
    torch.testing.assert_close(logits.detach(), full[:, 6:], rtol=1e-5, atol=1e-5)


def test_a_cuda_graph_off_cuda_is_refused(tiny_config):
    with pytest.raises(ValueError, match="cuda_graph needs a model on a CUDA device"):
        FoxCache(FoxLM(tiny_config()), cuda_graph=True)
