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
    buffers: list[torch.Tensor] = []  # kept alive: a freed buffer's address may be reused by the next one

    def __init__(self, step, cache, example, generator):
        saved = cache.snapshot()
        for _ in range(2):
            step(example.clone())  # an index past the buffers raises here, as it would fault on the GPU
        cache.restore(saved)
        self.step = step
        FakeGraphStep.captures.append(cache.layers[0].k.data_ptr())
        FakeGraphStep.buffers.append(cache.layers[0].k)

    def __call__(self, tokens):
        return self.step(tokens)


@pytest.fixture
def graphed(monkeypatch):
    FakeGraphStep.captures, FakeGraphStep.buffers = [], []
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


class OutputBufferGraphStep(FakeGraphStep):
    """As CUDAGraphStep: every replay writes its logits into one static output buffer."""

    def __call__(self, tokens):
        logits = self.step(tokens)
        if not hasattr(self, "out"):
            self.out = torch.empty_like(logits)
        return self.out.copy_(logits)


def test_a_steps_logits_are_not_overwritten_by_the_next_replay(tiny_config, monkeypatch, graphed):
    """A graph's output buffer is rewritten by each replay: the logits a step returned must not change with the
    next step (a manual decode loop may keep them)."""
    monkeypatch.setattr(hf_cache, "CUDAGraphStep", OutputBufferGraphStep)
    torch.manual_seed(6)
    lm = FoxLM(tiny_config(attn_backend="torch")).eval()
    hf = FoxForCausalLM.from_foxlm(lm).eval()
    ids = torch.randint(1, 64, (1, 7))
    cache = _cache(lm)
    with torch.no_grad():
        hf(ids[:, :5], **{CACHE_FIELD: cache})
        first = hf(ids[:, 5:6], **{CACHE_FIELD: cache}).logits
        kept = first.clone()
        hf(ids[:, 6:7], **{CACHE_FIELD: cache})
        full = hf(ids, use_cache=False).logits
    assert len(graphed) == 1 and torch.equal(first, kept)
    torch.testing.assert_close(first, full[:, 5:6], rtol=1e-5, atol=1e-5)


def test_a_chunk_after_the_prompt_is_not_fed_through_the_one_token_graph(tiny_config, graphed):
    """Several tokens after the prompt go through FoxLM's cached forward, every one of them."""
    torch.manual_seed(7)
    lm = FoxLM(tiny_config(attn_backend="torch")).eval()
    hf = FoxForCausalLM.from_foxlm(lm).eval()
    ids = torch.randint(1, 64, (2, 8))
    cache = _cache(lm)
    with torch.no_grad():
        hf(ids[:, :5], **{CACHE_FIELD: cache})
        chunk = hf(ids[:, 5:], **{CACHE_FIELD: cache}).logits
        full = hf(ids, use_cache=False).logits
    assert not graphed and cache.get_seq_length() == 8
    torch.testing.assert_close(chunk, full[:, 5:], rtol=1e-5, atol=1e-5)


def test_a_compiled_graph_is_not_replayed_where_autograd_records(tiny_config, monkeypatch, graphed):
    """With compile options the step is built once per kind: a graph where no gradient is wanted, the compiled step
    alone where autograd records (a graph records none), and the graph again after."""
    monkeypatch.setattr(torch, "compile", lambda fn, **options: fn)
    torch.manual_seed(8)
    lm = FoxLM(tiny_config(attn_backend="torch")).eval()
    hf = FoxForCausalLM.from_foxlm(lm).eval()
    ids = torch.randint(1, 64, (1, 8))
    cache = _cache(lm)
    cache.compile_options = {}
    with torch.no_grad():
        hf(ids[:, :5], **{CACHE_FIELD: cache})
        hf(ids[:, 5:6], **{CACHE_FIELD: cache})
    assert len(graphed) == 1 and isinstance(cache._step, FakeGraphStep)
    hf(ids[:, 6:7], **{CACHE_FIELD: cache})
    assert len(graphed) == 1 and not isinstance(cache._step, FakeGraphStep)
    with torch.no_grad():
        last = hf(ids[:, 7:8], **{CACHE_FIELD: cache}).logits
        full = hf(ids, use_cache=False).logits
    assert len(graphed) == 2
    torch.testing.assert_close(last, full[:, 7:], rtol=1e-5, atol=1e-5)
