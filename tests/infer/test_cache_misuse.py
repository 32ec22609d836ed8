"""Misuse of the decoding cache through the model: every case is a ValueError/TypeError that names the problem,
raised before anything runs (they once surfaced as IndexError, AttributeError or zip()'s message)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foxacp.model import FoxLM, ModelConfig


def tiny(variant="fox_pro", layers=2):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layers=layers, d_model=64, n_heads=4, n_kv_heads=2, variant=variant,
                      acp=True, fgate_bias_init=-1.0, init_std=0.1, attn_backend="torch")  # fmt: skip
    return FoxLM(cfg).eval()


IDS = torch.randint(0, 64, (2, 5))


@pytest.mark.parametrize("variant", ["fox_pro", "fox"])
def test_empty_input_is_a_value_error(variant):
    m = tiny(variant)
    with pytest.raises(ValueError, match="input_ids"):
        m(IDS[:, :0], cache=m.new_cache(2, 10))


def test_one_dimensional_input_ids_is_named():
    m = tiny()
    with pytest.raises(ValueError, match="input_ids"):
        m(IDS[0], cache=m.new_cache(1, 10))


@pytest.mark.parametrize("cache_layers", [1, 3])
def test_cache_with_another_layer_count_is_named(cache_layers):
    m = tiny()
    with pytest.raises(ValueError, match="layer"):
        m(IDS, cache=tiny(layers=cache_layers).new_cache(2, 10))


def test_cache_of_another_variant_is_a_value_error():
    m = tiny("fox_pro")
    with pytest.raises(ValueError, match="cache"):
        m(IDS, cache=tiny("fox").new_cache(2, 10))  # no token-shift state: AttributeError today


def test_non_floating_cache_dtype_is_refused_at_creation():
    with pytest.raises((TypeError, ValueError), match="dtype"):
        tiny().new_cache(2, 10, dtype=torch.int64)


def test_numpy_sizes_are_accepted_like_generate_does():
    m = tiny()
    assert m.new_cache(np.int64(2), np.int64(10)).batch_size == 2
    assert m.new_cache(2, 128, evict=True, pool_fraction=np.float32(0.5)).batch_size == 2


def test_bool_batch_size_is_a_value_error():
    with pytest.raises(ValueError, match="batch_size"):
        tiny().new_cache(True, 10)


@pytest.mark.parametrize(
    ("shape", "differs"),
    [(dict(d_model=128, n_heads=8), "n_heads"), (dict(n_kv_heads=4), "kv_heads"), (dict(d_model=128), "head_dim")],
)
def test_cache_of_a_model_with_other_heads_is_named(shape, differs):
    """Same layer count and variant, one other attention shape: a named error, not a kernel's or a broadcast."""
    m = tiny()
    cfg = dict(vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, attn_backend="torch") | shape
    other = FoxLM(ModelConfig(**cfg))
    names = ("n_heads", "kv_heads", "head_dim")
    assert {n for n in names if getattr(other.config, n) != getattr(m.config, n)} == {differs}
    with pytest.raises(ValueError, match="another model"):
        m(IDS, cache=other.new_cache(2, 10))
