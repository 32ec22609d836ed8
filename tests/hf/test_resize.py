"""resize_token_embeddings: the embedding and the untied LM head take the new vocabulary, the kept rows unchanged,
and the FoxLM's config follows transformers' config, so forward, both generate paths and save/load work at the new
size."""

from __future__ import annotations

import pytest
import torch

import foxacp

transformers = pytest.importorskip("transformers")
from foxacp.hf import FoxForCausalLM  # noqa: E402
from foxacp.model import FoxLM  # noqa: E402

OLD = 64


@pytest.fixture
def pair(tiny_config):
    torch.manual_seed(5)
    lm = FoxLM(tiny_config()).eval()  # vocab_size OLD
    return lm, FoxForCausalLM.from_foxlm(lm).eval()


def logits_of(lm: FoxLM, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return lm(ids)


@pytest.mark.parametrize(
    "new,pad_to,mean_resizing,size",
    [(80, None, False, 80), (80, None, True, 80), (48, None, True, 48), (70, 32, False, 96)],
)
def test_resize_keeps_the_old_rows_and_every_config_agrees(pair, new, pad_to, mean_resizing, size):
    lm, hf = pair
    ids = torch.randint(0, min(OLD, size), (2, 9), generator=torch.Generator().manual_seed(0))
    before = logits_of(lm, ids)
    old_embed, old_head = lm.embed.weight.detach().clone(), lm.lm_head.weight.detach().clone()
    embed = hf.resize_token_embeddings(new, pad_to_multiple_of=pad_to, mean_resizing=mean_resizing)
    assert embed is hf.get_input_embeddings() is hf.model.embed
    assert hf.config.vocab_size == hf.model.config.vocab_size == size
    assert hf.model.embed.weight.shape == hf.model.lm_head.weight.shape == (size, 64)
    kept = min(OLD, size)
    assert torch.equal(hf.model.embed.weight[:kept], old_embed[:kept])
    assert torch.equal(hf.model.lm_head.weight[:kept], old_head[:kept])
    assert bool(hf.model.embed.weight.isfinite().all()) and bool(hf.model.lm_head.weight.isfinite().all())
    # The old tokens' logits are the old model's (the LM head's kept rows); the vocabulary is the new one.
    after = logits_of(hf.model, ids)
    assert after.shape == (2, 9, size)
    torch.testing.assert_close(after[..., :kept], before[..., :kept], rtol=0, atol=0)


def test_a_grown_model_takes_the_new_tokens_in_forward_generate_and_save_load(pair, tmp_path):
    _, hf = pair
    hf.resize_token_embeddings(80, mean_resizing=False)
    ids = torch.randint(OLD, 80, (2, 6), generator=torch.Generator().manual_seed(1))  # new tokens only
    with torch.no_grad():
        out = hf(ids, labels=ids, use_cache=False)
        assert out.logits.shape == (2, 6, 80) and bool(out.loss.isfinite())
        greedy = hf.generate(ids, max_new_tokens=4, do_sample=False)
    (ours,) = foxacp.generate(hf.model, [ids[0]], 4)  # foxacp's own path reads the FoxLM's vocab_size
    assert torch.equal(greedy[0], ours)
    hf.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.vocab_size == loaded.model.config.vocab_size == 80
    with torch.no_grad():
        assert torch.equal(loaded(ids, use_cache=False).logits, out.logits)


def test_a_static_cache_made_before_a_resize_is_not_reused_after_it(pair):
    _, hf = pair
    ids = torch.randint(0, OLD, (1, 3), generator=torch.Generator().manual_seed(2))
    kw = {"max_new_tokens": 3, "do_sample": False, "disable_compile": True}
    hf.generate(ids, cache_implementation="static", **kw)  # a FoxStaticCache over the 64-token head
    assert hf._static_cache is not None
    hf.resize_token_embeddings(80, mean_resizing=False)
    assert hf._static_cache is None  # a CUDA graph captured over the old head would replay it
    with torch.no_grad():
        hf.model.lm_head.weight[:OLD] = 0.0  # the new tokens win
    static = hf.generate(ids, cache_implementation="static", **kw)
    assert torch.equal(static, hf.generate(ids, **kw))
    assert bool((static[:, ids.shape[1] :] >= OLD).all())


def test_the_embeddings_set_are_the_ones_got_and_used(pair):
    _, hf = pair
    ids = torch.randint(0, OLD, (1, 6), generator=torch.Generator().manual_seed(3))
    embed, head = torch.nn.Embedding(OLD, 64), torch.nn.Linear(64, OLD, bias=False)
    hf.set_input_embeddings(embed)
    hf.set_output_embeddings(head)
    assert hf.get_input_embeddings() is embed is hf.model.embed
    assert hf.get_output_embeddings() is head is hf.model.lm_head
    with torch.no_grad():
        torch.testing.assert_close(hf(ids, use_cache=False).logits, hf.model(ids))


def test_resize_draws_the_new_rows_from_the_old_rows_mean_by_default(pair):
    """As transformers' resize_token_embeddings: mean_resizing is on unless turned off."""
    _, hf = pair
    with torch.no_grad():
        hf.model.embed.weight += 3.0  # old rows far from where an initialisation draws them
    hf.resize_token_embeddings(80)
    old_mean = hf.model.embed.weight[:OLD].mean(0)
    torch.testing.assert_close(hf.model.embed.weight[OLD:], old_mean.expand(80 - OLD, -1), atol=0.05, rtol=0)
