"""hf/bench.per_step_ops counts the work of a decode step, not foxacp's one-off CUDA-graph capture: generate captures
from 2 new tokens on, so the difference of a 1-token and a 12-token call would hold the capture's ~3 eager steps.
The CPU has no CUDA graph: the test stands in for CUDAGraphStep with what the real one dispatches when built (two
eager steps, a snapshot/restore, the captured step) and a replay that dispatches nothing."""

from __future__ import annotations

import importlib

import torch
from torch.utils._python_dispatch import _disable_current_modes

from foxacp.hf.bench import _paths, per_step_ops
from foxacp.hf.modeling import FoxForCausalLM
from foxacp.model import FoxLM, ModelConfig
from foxacp.testing import CountOps

gen_mod = importlib.import_module("foxacp.infer.generate")


class FakeGraphStep:
    """Dispatches like CUDAGraphStep: capture = 2 eager warm-up steps + restore + 1 captured step; replay = none."""

    def __init__(self, step, cache, example, generator):
        saved = cache.snapshot()
        self.step = step
        self.tokens = example.clone()
        for _ in range(2):
            step(self.tokens)
        cache.restore(saved)
        step(self.tokens)  # the captured step (recorded, dispatched once)
        cache.restore(saved)  # capture does not run the kernels: undo the eager emulation

    def __call__(self, tokens):
        self.tokens.copy_(tokens)
        with _disable_current_modes():  # graph.replay(): no aten op reaches the dispatcher
            return self.step(self.tokens)


def test_foxacp_ops_per_step_excludes_the_one_off_graph_capture(monkeypatch):
    real = gen_mod.decode_n_tokens

    def decode_n_tokens(step, cache, first, n, **kw):
        if n > 1:  # generate(): ``if cuda_graph and max_new_tokens > 1: step = CUDAGraphStep(...)``
            step = FakeGraphStep(step, cache, first, None)
        return real(step, cache, first, n, **kw)

    monkeypatch.setattr(gen_mod, "decode_n_tokens", decode_n_tokens)
    torch.manual_seed(0)
    lm = FoxLM(ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=2, attn_backend="torch")).eval()
    hf = FoxForCausalLM.from_foxlm(lm).eval()
    prompts = torch.randint(0, 64, (1, 5))
    fns = _paths(lm, hf, prompts, False)

    # One eager decode step's aten ops, for scale.
    cache = lm.new_cache(1, 32)
    with torch.no_grad():
        lm(prompts, cache=cache)
        with CountOps() as counted:
            gen_mod.decode_one_token(lm, cache, prompts[:, -1], sampler=lambda x: x.argmax(-1))
    eager = sum(counted.ops.values())

    ops, reads = per_step_ops(fns["foxacp"], 12)
    # A replayed graph step dispatches a token copy and decode_n_tokens' own bookkeeping: a few ops, far below
    # a tenth of an eager step. The current code reports ~(3 eager steps) / 11 per step.
    assert ops < 0.1 * eager, (ops, eager)


def test_the_compiled_foxacp_path_calls_generate_with_compile_and_is_left_out_off_cuda(monkeypatch):
    import foxacp
    from foxacp.hf import bench

    calls = []

    def generate(model, prompts, n, **kw):
        calls.append(kw)
        return [torch.cat([p, torch.zeros(n, dtype=p.dtype)]) for p in prompts]

    monkeypatch.setattr(foxacp, "generate", generate)
    lm = FoxLM(ModelConfig(vocab_size=64, n_layers=1, d_model=32, n_heads=2, attn_backend="torch")).eval()
    fns = _paths(lm, FoxForCausalLM.from_foxlm(lm).eval(), torch.randint(0, 64, (2, 5)), False)
    assert fns["foxacp-compile"](3).shape == (2, 3) and calls == [{"compile": True}]
    fns["foxacp"](3)
    assert calls[-1] == {"compile": False}
    records = bench.run("tiny", 1, 4, 2, "cpu", "float32", vocab_size=64, paths=bench.PATHS, attn_backend="torch")
    assert "foxacp-compile" not in {r["path"] for r in records}  # torch.compile of a block: CUDA unless told
