"""GPU-only: generate() through transformers on CUDA (Triton kernels, FoxCache) equals foxacp.generate."""

import pytest
import torch

import foxacp
from foxacp.model import FoxLM, ModelConfig

pytest.importorskip("transformers")
from foxacp.hf import FoxForCausalLM  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("variant", ["fox_pro", "fox"])
def test_hf_generate_on_cuda_equals_foxacp_generate(variant):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=256, n_layers=2, d_model=256, n_heads=4, variant=variant, init_std=0.05)
    lm = FoxLM(cfg).cuda().eval()
    hf = FoxForCausalLM.from_foxlm(lm)
    rows = [torch.randint(1, 256, (n,)) for n in (70, 9, 33)]
    T = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, T - len(r) :], mask[b, T - len(r) :] = r, 1
    with torch.no_grad():
        out = hf.generate(ids.cuda(), attention_mask=mask.cuda(), max_new_tokens=40, do_sample=False, pad_token_id=0)
    expected = foxacp.generate(lm, rows, 40)
    for b, r in enumerate(rows):
        assert torch.equal(out[b, T - len(r) :].cpu(), expected[b]), b


def test_static_cache_on_cuda_equals_foxacp_generate_and_its_compiled_step_stays_close():
    from foxacp.hf import FoxStaticCache
    from foxacp.hf.modeling import CACHE_FIELD

    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=256, n_layers=2, d_model=256, n_heads=4, init_std=0.05)
    lm = FoxLM(cfg).cuda().to(torch.bfloat16).eval()
    hf = FoxForCausalLM.from_foxlm(lm)
    prompts = torch.randint(1, 256, (3, 40), device="cuda")
    with torch.no_grad():
        static = hf.generate(
            prompts, max_new_tokens=40, do_sample=False, cache_implementation="static", disable_compile=True
        )
    assert hf._static_cache.cuda_graph and hf._static_cache._step is not None  # the step ran as a CUDA graph
    assert torch.equal(static.cpu(), torch.stack(foxacp.generate(lm, prompts, 40)))  # same kernels, same schedule
    # One step compiled by inductor (in the graph) against the eager step, from the same cache state, in
    # float32: in bf16 inductor's reordered sums move logits by a few bf16 steps (0.025 seen on an H200).
    lm32 = FoxLM(cfg).cuda().eval()
    lm32.load_state_dict(lm.state_dict())
    hf32 = FoxForCausalLM.from_foxlm(lm32)
    logits = {}
    for name, options in (("eager", None), ("compiled", {"fullgraph": True})):
        cache = FoxStaticCache(lm32, 3, 48)
        cache.compile_step(options)
        with torch.no_grad():
            first = hf32(prompts, **{CACHE_FIELD: cache}).logits[:, -1].argmax(-1, keepdim=True)
            logits[name] = hf32(first, **{CACHE_FIELD: cache}).logits.float()
    torch.testing.assert_close(logits["compiled"], logits["eager"], rtol=1e-4, atol=1e-4)


def test_the_default_cache_replays_a_cuda_graph_and_equals_foxacp_generate(monkeypatch):
    from foxacp.hf import FoxCache
    from foxacp.hf import cache as hf_cache

    monkeypatch.setattr(hf_cache, "HEADROOM", 8)  # grows (and captures again) during the generation
    torch.manual_seed(2)
    cfg = ModelConfig(vocab_size=256, n_layers=2, d_model=256, n_heads=4, init_std=0.05)
    lm = FoxLM(cfg).cuda().to(torch.bfloat16).eval()
    hf = FoxForCausalLM.from_foxlm(lm)
    prompts = torch.randint(1, 256, (3, 40), device="cuda")
    cache = FoxCache(lm)
    with torch.no_grad():
        out = hf.generate(prompts, max_new_tokens=40, do_sample=False, cache=cache)
    assert cache.cuda_graph and cache._step_graphed and cache.kv.max_len > 48
    assert torch.equal(out.cpu(), torch.stack(foxacp.generate(lm, prompts, 40)))
