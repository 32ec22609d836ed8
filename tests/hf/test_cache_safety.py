"""A FoxCache's state is never silently wrong: a step interrupted part-way stays refused after the buffers grow,
and a deferred prompt is the prompt given, whatever the caller does with its tensor afterwards."""

import pytest
import torch

from foxacp.hf import FoxCache, FoxForCausalLM
from foxacp.hf import cache as hf_cache
from foxacp.model import FoxLM, ModelConfig


def models():
    torch.manual_seed(0)
    lm = FoxLM(ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=2, attn_backend="torch")).eval()
    return lm, FoxForCausalLM.from_foxlm(lm).eval()


def test_an_interrupted_step_stays_refused_after_the_cache_grows(monkeypatch):
    monkeypatch.setattr(hf_cache, "HEADROOM", 1)  # 6 slots after a 5-token prompt: 2 more tokens grow the buffers
    lm, hf = models()
    ids = torch.randint(1, 64, (1, 8))
    cache = FoxCache(lm)
    with torch.no_grad():
        hf(ids[:, :5], past_key_values=cache, use_cache=True)

        def interrupt(module, args):
            raise KeyboardInterrupt  # Ctrl-C during a generate step (an unchecked one-token step)

        hook = lm.blocks[1].register_forward_pre_hook(interrupt)
        with pytest.raises(KeyboardInterrupt):
            hf(ids[:, 5:6], past_key_values=cache, use_cache=True)
        hook.remove()
        assert cache.kv.interrupted
        slots = cache.kv.max_len
        with pytest.raises(ValueError, match="part-way"):
            hf(ids[:, 5:7], past_key_values=cache, use_cache=True)
        assert cache.kv.max_len > slots and cache.kv.interrupted  # it grew, and kept the mark


def test_a_deferred_prompt_is_copied():
    lm, hf = models()
    buf, nxt = torch.randint(1, 64, (1, 6)), torch.randint(1, 64, (1, 1))
    prompt = buf.clone()
    with torch.no_grad():
        cache = hf(buf).past_key_values
        buf.fill_(7)  # the caller reuses its token buffer
        step = hf(nxt, past_key_values=cache).logits[0, -1]
        full = lm(torch.cat([prompt, nxt], 1))[0, -1]
    torch.testing.assert_close(step, full, atol=1e-4, rtol=1e-4)
