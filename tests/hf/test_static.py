"""generate(cache_implementation="static") and the FoxStaticCache: the same tokens as the dynamic FoxCache and
foxacp.generate, reuse across calls, a one-token step with no host reads, under torch.compile (fullgraph), and
what it refuses; sampling (top-k, top-p, a seed) and a streamer on both caches."""

from __future__ import annotations

import pytest
import torch

import foxacp
from foxacp.model import FoxLM
from foxacp.testing import HOST_READS, CountOps

transformers = pytest.importorskip("transformers")
from foxacp.hf import FoxForCausalLM, FoxStaticCache  # noqa: E402
from foxacp.hf.modeling import CACHE_FIELD  # noqa: E402

from .test_generate import left_pad  # noqa: E402

CACHES = pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])


@pytest.fixture(params=["fox_pro", "fox"])
def pair(request, tiny_config):
    torch.manual_seed(3)
    # The PyTorch decode op: quick on the CPU, and traceable by torch.compile (the Triton interpreter is not).
    lm = FoxLM(tiny_config(request.param, fgate_bias_init=-1.0, attn_backend="torch")).eval()  # rebases
    return lm, FoxForCausalLM.from_foxlm(lm).eval()


def test_static_generate_equals_the_dynamic_cache_and_foxacp_generate_and_reuses_its_cache(pair):
    lm, hf = pair
    rows = [torch.randint(1, 64, (n,)) for n in (7, 2, 4)]
    ids, mask = left_pad(rows, pad=0)
    kw = dict(attention_mask=mask, max_new_tokens=35, do_sample=False, pad_token_id=0)
    dynamic = hf.generate(ids, **kw)
    static = hf.generate(ids, cache_implementation="static", **kw)
    assert torch.equal(static, dynamic)
    expected = foxacp.generate(lm, rows, 35)
    for b, r in enumerate(rows):
        assert torch.equal(static[b, ids.shape[1] - len(r) :], expected[b]), b
    cache = hf._static_cache
    assert isinstance(cache, FoxStaticCache) and cache.max_cache_len == ids.shape[1] + 34  # the last token is not fed
    again = hf.generate(ids[:, 3:], attention_mask=mask[:, 3:], max_new_tokens=9, do_sample=False, pad_token_id=0)
    shorter = hf.generate(ids, cache_implementation="static", **{**kw, "max_new_tokens": 20})
    assert hf._static_cache is cache  # fits: reused, emptied first
    assert torch.equal(shorter, dynamic[:, : ids.shape[1] + 20])
    hf.generate(ids[:2], cache_implementation="static", **{**kw, "attention_mask": mask[:2]})
    assert hf._static_cache is not cache  # another batch size
    assert again.shape == (3, ids.shape[1] - 3 + 9)
    cache = hf._static_cache
    hf.double().float()  # new storage for every parameter: a captured step would read the old
    moved = hf.generate(ids[:2], cache_implementation="static", **{**kw, "attention_mask": mask[:2]})
    assert hf._static_cache is not cache and torch.equal(moved, dynamic[:2])


def test_a_compiled_static_step_fullgraph_gives_the_same_tokens(pair):
    lm, hf = pair
    prompt = torch.randint(0, 64, (2, 5))
    expected = hf.generate(prompt, max_new_tokens=18, do_sample=False)
    torch._dynamo.reset()
    cache = FoxStaticCache(lm, 2, 23)
    cache.compile_step({"backend": "eager", "fullgraph": True})  # fullgraph: a graph break would raise
    out = hf.generate(prompt, max_new_tokens=18, do_sample=False, **{CACHE_FIELD: cache})
    assert torch.equal(out, expected)


def test_generate_compiles_the_static_step_through_its_compile_config(pair):
    lm, hf = pair
    prompt = torch.randint(0, 64, (1, 6))
    config = transformers.CompileConfig(backend="eager", fullgraph=True)
    config._compile_all_devices = True  # transformers compiles on accelerators only unless told
    torch._dynamo.reset()
    out = hf.generate(prompt, max_new_tokens=10, do_sample=False, cache_implementation="static", compile_config=config)
    assert hf._static_cache.compile_options == config.to_dict()
    assert torch.equal(out[0], foxacp.generate(lm, prompt, 10)[0])
    hf.generate(prompt, max_new_tokens=10, do_sample=False, cache_implementation="static", disable_compile=True)
    assert hf._static_cache.compile_options is None  # the same cache, no longer compiled


@CACHES
def test_a_decode_step_reads_nothing_back_to_the_host(pair, cache_implementation):
    lm, hf = pair
    ids = torch.randint(0, 64, (2, 6))
    cache = FoxStaticCache(lm, 2, 12) if cache_implementation == "static" else None
    with torch.no_grad():
        out = hf(ids, use_cache=True, **{CACHE_FIELD: cache})
        cache = getattr(out, CACHE_FIELD)
        for _ in range(3):  # below the first rebase (a host read every REBASE_EVERY steps)
            with CountOps() as counted:
                out = hf(out.logits[:, -1:].argmax(-1), **{CACHE_FIELD: cache})
            assert sum(counted.ops[name] for name in HOST_READS) == 0, counted.ops
    assert cache.steps == 3 and cache.get_seq_length() == 9


def test_what_the_static_cache_refuses(pair):
    lm, hf = pair
    cache = FoxStaticCache(lm, 2, 8)
    ids = torch.randint(0, 64, (2, 6))
    with pytest.raises(ValueError, match="batch size 3"):
        hf(torch.randint(0, 64, (3, 4)), **{CACHE_FIELD: cache})
    with pytest.raises(ValueError, match="exceed the static cache's 8"):
        hf(torch.randint(0, 64, (2, 9)), **{CACHE_FIELD: cache})
    with torch.no_grad():
        hf(ids, **{CACHE_FIELD: cache})
        hf(ids[:, :1], **{CACHE_FIELD: cache})
        hf(ids[:, :1], **{CACHE_FIELD: cache})
        with pytest.raises(ValueError, match="exceed the static cache's 8"):
            hf(ids[:, :1], **{CACHE_FIELD: cache})
    with pytest.raises(ValueError, match="cuda_graph"):
        FoxStaticCache(lm, 1, 4, cuda_graph=True)
    with pytest.raises(ValueError, match="cache_implementation='quantized'"):
        hf.generate(ids, max_new_tokens=2, cache_implementation="quantized")


def allowed(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """The tokens (V,) bool that top-k and then top-p sampling at this temperature may draw from logits (V,)."""
    order = logits.argsort(descending=True)
    keep = torch.zeros_like(logits, dtype=torch.bool)
    n = len(order) if top_k is None else top_k
    if top_p is not None:
        probs = torch.softmax(logits[order[:n]].double() / temperature, -1)
        before = probs.cumsum(0) - probs  # mass of the better tokens: a token is kept while that is below top_p
        n = int((before < top_p).sum())
    keep[order[:n]] = True
    return keep


@CACHES
@pytest.mark.parametrize("top_k, top_p", [(3, None), (None, 0.6), (5, 0.8)])
def test_sampling_draws_only_allowed_tokens_and_a_seed_fixes_it(pair, cache_implementation, top_k, top_p):
    lm, hf = pair
    prompt = torch.randint(0, 64, (2, 4))
    kw = dict(max_new_tokens=12, do_sample=True, temperature=0.7, top_k=top_k or 0, top_p=top_p or 1.0)

    def draw(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return hf.generate(prompt, cache_implementation=cache_implementation, **kw)

    out = draw(0)
    assert torch.equal(out, draw(0))
    assert not torch.equal(out, draw(1)) or not torch.equal(out, draw(2))
    with torch.no_grad():
        logits = lm(out).float()  # the full forward: each step's logits, independently of any cache
    for b in range(2):
        for t in range(4, out.shape[1]):
            assert allowed(logits[b, t - 1], 0.7, top_k, top_p)[out[b, t]], (b, t)


@CACHES
def test_a_streamer_sees_the_prompt_then_every_new_token(pair, cache_implementation):
    lm, hf = pair
    seen = []

    class Collect(transformers.generation.streamers.BaseStreamer):
        def put(self, value):
            seen.append(value.clone())

        def end(self):
            seen.append(None)

    prompt = torch.randint(0, 64, (1, 4))
    out = hf.generate(
        prompt, max_new_tokens=5, do_sample=False, streamer=Collect(), cache_implementation=cache_implementation
    )
    assert seen[-1] is None and torch.equal(seen[0].flatten(), prompt[0])
    assert torch.equal(torch.cat([t.flatten() for t in seen[1:-1]]), out[0, 4:])
    assert torch.equal(out[0], foxacp.generate(lm, prompt, 5)[0])
