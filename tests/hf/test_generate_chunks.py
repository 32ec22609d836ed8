"""transformers generate against foxacp.generate: left-padded batches, static caches, a save/load round trip,
prefill in chunks (prefill_chunk_size) and a cache continued with only its new tokens. The last two used to fail
(IndexError): prepare_inputs_for_generation sliced every input by the cache's length, chunks to nothing."""

from __future__ import annotations

import pytest
import torch

import foxacp
from tests.infer.models import tiny_model

transformers = pytest.importorskip("transformers")
from foxacp.hf import FoxCache, FoxForCausalLM  # noqa: E402
from tests.hf.test_generate import left_pad  # noqa: E402


def pair(acp=True):
    lm = tiny_model("fox_pro", acp=acp)
    with torch.no_grad():
        for b in lm.blocks:
            b.attn.fgate.bias.copy_(torch.tensor([-3.0, -0.5, 1.0, -4.0]))
    return lm, FoxForCausalLM.from_foxlm(lm).eval()


@pytest.mark.parametrize("impl", [None, "static"])
def test_padded_long_generate_equals_foxacp(impl):
    lm, hf = pair()
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(1, 64, (n,), generator=g) for n in (20, 1, 70)]
    ids, mask = left_pad(rows, 0)
    kw = {} if impl is None else {"cache_implementation": impl}
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=45, do_sample=False, pad_token_id=0, **kw)
    exp = foxacp.generate(lm, rows, 45)
    for b, r in enumerate(rows):
        assert torch.equal(out[b, ids.shape[1] - len(r) :], exp[b]), b


def test_static_reused_for_shorter_then_longer():
    lm, hf = pair()
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(1, 64, (n,), generator=g) for n in (9, 4)]
    ids, mask = left_pad(rows, 0)
    kw = dict(do_sample=False, pad_token_id=0, cache_implementation="static")
    hf.generate(ids, attention_mask=mask, max_new_tokens=30, **kw)
    out = hf.generate(ids[:, 3:], attention_mask=mask[:, 3:], max_new_tokens=10, **kw)
    exp = foxacp.generate(lm, [rows[0][3:] if len(rows[0]) > 6 else rows[0], rows[1]], 10)
    assert torch.equal(out[0], exp[0])
    assert torch.equal(out[1, 6 - 4 :], exp[1])


def test_save_load_round_trip_generate(tmp_path):
    lm, hf = pair()
    hf.save_pretrained(tmp_path)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    prompt = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(3))
    a = back.generate(prompt, max_new_tokens=20, do_sample=False)
    b = torch.stack(foxacp.generate(lm, prompt, 20))
    assert torch.equal(a, b)
    loaded = foxacp.load(tmp_path)
    c = torch.stack(foxacp.generate(loaded, prompt, 20))
    assert torch.equal(c, b)


@pytest.mark.parametrize("impl", [None, "static"])
def test_prefill_chunk_size_equals_foxacp_generate(impl):
    # transformers' chunked prefill hands prepare_inputs_for_generation one chunk at a time (mask up to its end)
    lm, hf = pair()
    prompt = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(0))
    kw = {} if impl is None else {"cache_implementation": impl}
    out = hf.generate(prompt, max_new_tokens=6, do_sample=False, prefill_chunk_size=4, **kw)
    assert torch.equal(out[0], foxacp.generate(lm, prompt, 6)[0])


def test_continuing_a_cache_with_only_the_new_tokens():
    # transformers lets a generate call that reuses a cache pass only the tokens the cache has not seen, with the
    # attention_mask covering the whole sequence (GenerationMixin._prefill)
    from foxacp.hf.modeling import CACHE_FIELD

    lm, hf = pair()
    prompt = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(0))
    cache = FoxCache(lm)
    first = hf.generate(prompt, max_new_tokens=5, do_sample=False, **{CACHE_FIELD: cache})
    extra = torch.tensor([[1, 2, 3]])
    unseen = torch.cat([first[:, cache.seen :], extra], 1)
    mask = torch.ones(1, cache.seen + unseen.shape[1], dtype=torch.long)
    out = hf.generate(unseen, attention_mask=mask, max_new_tokens=4, do_sample=False, **{CACHE_FIELD: cache})
    want = foxacp.generate(lm, torch.cat([first, extra], 1), 4)[0]
    assert torch.equal(out[0, -4:], want[-4:])


def test_padding_past_the_first_prefill_chunk_is_refused():
    """Left padding longer than the first chunk leaves a row of it empty (refused as such); a hole in a later chunk
    is refused by name, not taken as a token."""
    _, hf = pair()
    kw = dict(max_new_tokens=3, do_sample=False, pad_token_id=0, prefill_chunk_size=4)
    ids, mask = left_pad([torch.arange(1, 3), torch.arange(1, 11)], 0)  # 8 pads: past a first chunk of 4
    with pytest.raises(ValueError, match="every row needs at least one token"):
        hf.generate(ids, attention_mask=mask, **kw)
    ids, mask = torch.arange(1, 11)[None], torch.ones(1, 10, dtype=torch.long)
    mask[0, 5] = 0
    with pytest.raises(ValueError, match="padding after the first prefill chunk"):
        hf.generate(ids, attention_mask=mask, **kw)
