"""FoxForCausalLM against transformers' conventions for causal LMs: use_cache=None means config.use_cache, a cache
belongs to its model, hidden states and attentions are refused (not returned as None) through generate too,
return_dict=False gives a tuple, the config has the token-id attributes, and a missing directory is named."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from foxacp.hf import FoxCache, FoxForCausalLM  # noqa: E402
from foxacp.model import FoxLM  # noqa: E402


@pytest.fixture
def pair(tiny_config):
    torch.manual_seed(1)
    lm = FoxLM(tiny_config(fgate_bias_init=2.0)).eval()
    return lm, FoxForCausalLM.from_foxlm(lm).eval()


def test_forward_returns_a_cache_by_default_so_a_manual_decode_loop_keeps_its_context(pair):
    """transformers' causal LMs take use_cache=None as config.use_cache (True): ``out = model(ids)`` returns a cache
    and ``model(next, past_key_values=out.past_key_values)`` continues it (without one, the loop's second call would
    see the new token alone)."""
    lm, hf = pair
    ids, nxt = torch.randint(0, 64, (1, 6)), torch.randint(0, 64, (1, 1))
    with torch.no_grad():
        out = hf(ids)
        assert isinstance(out.past_key_values, FoxCache)
        # The full forward's logits, exactly; the cache takes the prompt in only when continued.
        assert torch.equal(out.logits, hf(ids, use_cache=False).logits) and out.past_key_values.kv is None
        assert out.past_key_values.get_seq_length() == 6
        # and so do its layers, which transformers' mask helpers ask (get_mask_sizes: cached + new tokens)
        assert [layer.get_seq_length() for layer in out.past_key_values.layers] == [6, 6]
        assert out.past_key_values.get_mask_sizes(1, 0) == (7, 0)
        step = hf(nxt, past_key_values=out.past_key_values).logits[0, -1]
        torch.testing.assert_close(step, lm(torch.cat([ids, nxt], 1))[0, -1], rtol=1e-5, atol=1e-5)


def test_a_cache_of_another_model_is_refused(pair, tiny_config):
    """A FoxCache runs the FoxLM it was made for: handed to another model, it is refused (it would return the first
    model's outputs)."""
    lm, hf = pair
    torch.manual_seed(2)
    other = FoxForCausalLM.from_foxlm(FoxLM(tiny_config()).eval()).eval()
    ids = torch.randint(0, 64, (1, 6))
    with pytest.raises(ValueError, match="cache"):
        other(ids, cache=FoxCache(lm))
    out = hf.generate(ids, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    with pytest.raises(ValueError, match="cache"):
        other.generate(out.sequences, cache=out.cache, max_new_tokens=2, do_sample=False)


@pytest.mark.parametrize("flag", ["output_hidden_states", "output_attentions"])
def test_generate_refuses_hidden_states_and_attentions_as_forward_does(pair, flag):
    """README: output_hidden_states and output_attentions are refused rather than returned as None, by generate too
    (which hands them to prepare_inputs_for_generation, not to forward)."""
    _, hf = pair
    with pytest.raises(ValueError, match=flag):
        hf.generate(torch.randint(0, 64, (1, 4)), max_new_tokens=2, return_dict_in_generate=True, **{flag: True})


def test_return_dict_false_gives_a_tuple(pair):
    _, hf = pair
    ids = torch.randint(0, 64, (1, 5))
    out = hf(ids, labels=ids, return_dict=False)
    assert isinstance(out, tuple)
    loss, logits = out[:2]
    assert loss.ndim == 0 and logits.shape == (1, 5, 64)


def test_the_config_has_the_token_id_attributes_of_a_transformers_config(pair, tmp_path):
    """transformers 5 config classes declare bos/eos/pad_token_id themselves (LlamaConfig: 1, 2, None), so that the
    common ``model.config.pad_token_id = model.config.eos_token_id`` works."""
    from foxacp.hf import FoxConfig

    _, hf = pair
    for config in (FoxConfig(), hf.config):
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            assert getattr(config, name) is None
    hf.save_pretrained(tmp_path)
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path).config.pad_token_id is None


def test_load_official_of_a_missing_local_directory_says_so(tmp_path):
    """A local path that does not exist is said to be missing (not read as a hub name and refused as one)."""
    from foxacp.hf import OfficialCheckpointError, load_official

    with pytest.raises((OfficialCheckpointError, FileNotFoundError), match="does_not_exist"):
        load_official(tmp_path / "does_not_exist")


def test_a_deferred_cache_continues_left_padded_prompts(pair):
    lm, hf = pair
    rows = [torch.randint(1, 64, (n,)) for n in (5, 2)]
    ids, mask = torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, 5 - len(r) :], mask[b, 5 - len(r) :] = r, 1
    nxt = torch.randint(1, 64, (2, 1))
    with torch.no_grad():
        cache = hf(ids, attention_mask=mask).past_key_values
        step = hf(nxt, attention_mask=torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1), past_key_values=cache)
        for b, r in enumerate(rows):
            full = lm(torch.cat([r, nxt[b]])[None])[0, -1]
            torch.testing.assert_close(step.logits[b, -1], full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="empty FoxCache"):
        cache.defer(ids, mask)


def test_a_training_forward_returns_no_cache_and_use_cache_true_feeds_the_prompt_at_once(tiny_config):
    """use_cache=None returns a deferred cache except while training (autograd recording) or with labels;
    use_cache=True takes the prompt in at once."""
    hf = FoxForCausalLM.from_foxlm(FoxLM(tiny_config(attn_backend="torch")).eval()).eval()
    ids = torch.randint(0, 64, (1, 6))
    hf.train()
    try:
        assert hf(ids).past_key_values is None
        with torch.no_grad():  # an evaluation inside training: nothing is recorded, so a cache is returned
            assert hf(ids).past_key_values.kv is None
    finally:
        hf.eval()
    with torch.no_grad():
        assert hf(ids, labels=ids).past_key_values is None
        fed = hf(ids, use_cache=True).past_key_values
    assert fed.kv is not None and fed.seen == 6
