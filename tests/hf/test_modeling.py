"""foxacp.hf: FoxConfig <-> ModelConfig, save_pretrained / from_pretrained, left padding, loss, Auto classes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from foxacp.model import FoxLM

transformers = pytest.importorskip("transformers")
from foxacp.hf import FoxConfig, FoxForCausalLM  # noqa: E402

VARIANTS = [("fox_pro", {"n_kv_heads": 1}), ("fox", {}), ("transformer", {})]


def fresh_lm(cfg, seed=0):
    torch.manual_seed(seed)
    lm = FoxLM(cfg).eval()
    with torch.no_grad():  # gains and gate biases away from their init values, so a lost one shows
        for p in lm.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.3)
    return lm


@pytest.mark.parametrize("variant,kw", VARIANTS)
def test_config_round_trips_through_model_config_and_json(tmp_path, tiny_config, variant, kw):
    cfg = tiny_config(variant, mlp_ratio=2.0, log_eps=-7.0, **kw)
    hf_cfg = FoxConfig.from_model_config(cfg, eos_token_id=5)
    assert hf_cfg.to_model_config() == cfg
    assert (hf_cfg.hidden_size, hf_cfg.num_hidden_layers, hf_cfg.num_attention_heads) == (64, 2, 2)
    assert hf_cfg.num_key_value_heads == cfg.kv_heads
    hf_cfg.save_pretrained(tmp_path)
    back = transformers.AutoConfig.from_pretrained(tmp_path)
    assert isinstance(back, FoxConfig) and back.to_model_config() == cfg and back.eos_token_id == 5
    assert FoxConfig().to_model_config() == type(cfg)()  # the defaults are ModelConfig's


def test_config_refuses_what_model_config_refuses(tiny_config):
    with pytest.raises(ValueError, match="variant"):
        FoxConfig(variant="mamba")
    with pytest.raises(ValueError, match="divisible"):
        FoxConfig(d_model=65, n_heads=2)
    with pytest.raises(TypeError, match="ModelConfig"):
        FoxConfig.from_model_config({"d_model": 64})


def test_config_takes_num_key_value_heads_like_the_other_generic_names():
    cfg = FoxConfig(vocab_size=320, n_layers=2, d_model=64, n_heads=4, num_key_value_heads=2)
    assert (cfg.n_kv_heads, cfg.num_key_value_heads, cfg.to_model_config().kv_heads) == (2, 2, 2)
    assert FoxConfig(vocab_size=320, n_layers=2, d_model=64, n_heads=4, num_key_value_heads=4).n_kv_heads in (None, 4)
    with pytest.raises(ValueError, match="contradicts"):
        FoxConfig(vocab_size=320, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, num_key_value_heads=4)


@pytest.mark.parametrize("variant,kw", VARIANTS)
def test_save_pretrained_then_auto_from_pretrained_gives_identical_logits(tmp_path, tiny_config, variant, kw):
    lm = fresh_lm(tiny_config(variant, **kw))
    hf = FoxForCausalLM.from_foxlm(lm)
    assert hf.model is lm
    assert list(hf.state_dict()) == [f"model.{k}" for k in lm.state_dict()]
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded, FoxForCausalLM) and not loaded.training
    for (name, a), b in zip(lm.state_dict().items(), loaded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    ids = torch.randint(0, 64, (2, 13))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, lm(ids))
        base = transformers.AutoModel.from_pretrained(tmp_path)
        assert torch.equal(base(ids).logits, lm(ids))


def test_missing_weights_get_foxlm_initialisation(tiny_config):
    cfg = dataclasses.replace(tiny_config(), fgate_bias_init=4.0, init_std=0.05)
    hf = FoxForCausalLM(FoxConfig.from_model_config(cfg))
    attn = hf.model.blocks[1].attn
    assert torch.equal(attn.fgate.bias, torch.full((2,), 4.0))
    assert torch.equal(attn.q_norm.weight, torch.ones(64))
    assert abs(float(attn.wq.weight.detach().std()) - 0.05) < 0.01


def test_left_padded_rows_give_the_logits_of_each_row_alone(tiny_config):
    lm = fresh_lm(tiny_config(n_kv_heads=1))
    hf = FoxForCausalLM.from_foxlm(lm)
    lengths = [7, 1, 4]
    rows = [torch.randint(0, 64, (n,)) for n in lengths]
    T = max(lengths)
    ids = torch.full((3, T), 0, dtype=torch.long)
    mask = torch.zeros(3, T, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, T - len(r) :], mask[b, T - len(r) :] = r, 1
    with torch.no_grad():
        out = hf(ids, attention_mask=mask).logits
        for b, r in enumerate(rows):
            torch.testing.assert_close(out[b, T - len(r) :], lm(r[None])[0], rtol=1e-5, atol=1e-5)
            assert torch.all(out[b, : T - len(r)] == 0)
        assert torch.equal(hf(ids[:1], attention_mask=mask[:1]).logits, lm(ids[:1]))  # no padding: plain forward


def test_bad_attention_masks_are_refused(tiny_config):
    hf = FoxForCausalLM.from_foxlm(fresh_lm(tiny_config()))
    ids = torch.randint(0, 64, (2, 4))
    cases = {
        "only left padding": torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1]]),
        "at least one token": torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]),
        "only 0": torch.tensor([[2, 1, 1, 1], [1, 1, 1, 1]]),
        "shape": torch.ones(2, 5, dtype=torch.long),
    }
    for match, mask in cases.items():
        with pytest.raises(ValueError, match=match):
            hf(ids, attention_mask=mask)
    with pytest.raises(ValueError, match="inputs_embeds"):
        hf(ids, inputs_embeds=torch.zeros(2, 4, 64))


def test_labels_give_the_shifted_mean_cross_entropy(tiny_config):
    lm = fresh_lm(tiny_config("fox"))
    hf = FoxForCausalLM.from_foxlm(lm)
    ids = torch.randint(0, 64, (2, 9))
    labels = ids.clone()
    labels[0, :3] = -100
    out = hf(ids, labels=labels)
    logits = lm(ids).double()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    keep = labels[:, 1:] != -100
    expected = -(logp[keep]).mean()
    torch.testing.assert_close(out.loss.double(), expected, rtol=1e-5, atol=1e-6)
    out.loss.backward()
    assert lm.embed.weight.grad is not None


def test_generic_config_names_are_taken_before_validation():
    """transformers' names (hidden_size, ...) set the fields they mean, validated as such; a contradiction fails."""
    from foxacp.hf import FoxConfig

    cfg = FoxConfig(vocab_size=64, hidden_size=96, num_attention_heads=3, num_hidden_layers=2)
    assert (cfg.d_model, cfg.n_heads, cfg.n_layers) == (96, 3, 2) and cfg.hidden_size == 96
    with pytest.raises(ValueError, match="contradicts"):
        FoxConfig(hidden_size=96, d_model=64)


def test_forward_takes_transformers_causal_lm_keywords(tiny_config):
    """forward(**kwargs) used to swallow them: Trainer's num_items_in_batch (the loss must be the sum over the
    labelled tokens divided by it, else gradient accumulation comes out that many times too large) and
    logits_to_keep; output_hidden_states came back None. Now taken, or refused."""
    hf = FoxForCausalLM.from_foxlm(FoxLM(dataclasses.replace(tiny_config(), attn_backend="torch"))).eval()
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[0, 3] = -100
    with torch.no_grad():
        full = hf(ids, labels=labels)
        summed = torch.nn.functional.cross_entropy(
            full.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum"
        )
        torch.testing.assert_close(hf(ids, labels=labels, num_items_in_batch=torch.tensor(24)).loss, summed / 24)
        torch.testing.assert_close(full.loss, summed / 11)  # the mean over the 11 labelled next tokens
        torch.testing.assert_close(hf(ids, logits_to_keep=1).logits, full.logits[:, -1:])
        torch.testing.assert_close(hf(ids, logits_to_keep=torch.tensor([0, 5])).logits, full.logits[:, [0, 5]])
        with pytest.raises(ValueError, match="output_hidden_states"):
            hf(ids, output_hidden_states=True)
