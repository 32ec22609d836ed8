import pytest
import torch

from foxacp.model import MODEL_PRESETS, FoxLM, ModelConfig, flops_per_token, mlp_hidden, n_params
from foxacp.model.config import VARIANTS


def test_presets_shape():
    for name, (layers, d, heads) in {
        "125M": (12, 768, 12),
        "360M": (24, 1024, 16),
        "760M": (24, 1536, 24),
    }.items():
        cfg = MODEL_PRESETS[name]
        assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.head_dim) == (layers, d, heads, 64)
    tiny = MODEL_PRESETS["tiny"]
    assert tiny.head_dim in (32, 64)


def test_mlp_hidden():
    # d_model * ratio * 2/3 rounded up to a multiple of 256; ratio 3.5 for Pro, 4 otherwise.
    assert mlp_hidden(MODEL_PRESETS["125M"]) == 1792
    assert mlp_hidden(MODEL_PRESETS["360M"]) == 2560  # 2389.3 -> 2560
    assert mlp_hidden(MODEL_PRESETS["760M"]) == 3584
    assert mlp_hidden(ModelConfig.from_preset("125M", variant="fox")) == 2048
    assert mlp_hidden(ModelConfig.from_preset("360M", variant="transformer")) == 2816  # 2730.7
    assert mlp_hidden(ModelConfig(d_model=768, n_heads=12, mlp_ratio=2.0)) == 1024


@pytest.mark.parametrize("name,lo,hi", [("125M", 110e6, 160e6), ("360M", 330e6, 420e6), ("760M", 700e6, 850e6)])
def test_preset_param_counts(name, lo, hi):
    cfg = MODEL_PRESETS[name]
    with torch.device("meta"):
        model = FoxLM(cfg)
    total = sum(p.numel() for p in model.parameters())
    assert total == n_params(cfg)
    assert lo < total < hi


@pytest.mark.parametrize("variant", VARIANTS)
def test_n_params_exact(variant):
    cfg = ModelConfig(vocab_size=100, n_layers=2, d_model=96, n_heads=6, n_kv_heads=2, variant=variant)
    model = FoxLM(cfg)
    assert sum(p.numel() for p in model.parameters()) == n_params(cfg)
    assert n_params(cfg) - n_params(cfg, embedding=False) == model.embed.weight.numel()


def test_flops_per_token():
    cfg = MODEL_PRESETS["125M"]
    with torch.device("meta"):
        model = FoxLM(cfg)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert flops_per_token(cfg, 4096, attn_fraction=0.0) == 6 * matmul
    attn = flops_per_token(cfg, 4096) - 6 * matmul
    assert attn == 6 * cfg.n_layers * cfg.d_model * 4096
    assert flops_per_token(cfg, 4096, attn_fraction=0.3) == pytest.approx(6 * matmul + 0.3 * attn)


def test_from_preset_overrides():
    cfg = ModelConfig.from_preset("tiny", vocab_size=1000, variant="fox", acp=False)
    assert (cfg.vocab_size, cfg.variant, cfg.attn_log_eps) == (1000, "fox", None)
    assert ModelConfig().attn_log_eps == -10.0
    assert ModelConfig(variant="transformer").attn_log_eps is None  # no gate: always exact
    assert ModelConfig(n_heads=12, n_kv_heads=4).kv_heads == 4


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(d_model=100, n_heads=12), "divisible"),
        (dict(n_heads=12, n_kv_heads=5), "multiple of n_kv_heads"),
        (dict(variant="mamba"), "unknown variant"),
        (dict(attn_backend="cuda"), "unknown attn_backend"),
        (dict(n_layers=0), "n_layers"),
        (dict(log_eps=0.0), "log_eps"),
        (dict(variant="transformer", d_model=36, n_heads=4), "even head_dim"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.from_preset("7B")


SMALL = dict(vocab_size=50, n_layers=1, d_model=32, n_heads=2)


@pytest.mark.parametrize(
    "field,value",
    [("rope_base", 0.0), ("rope_base", -1.0), ("rope_base", float("nan")), ("qk_bound_safety", float("inf")),
     ("init_std", float("inf")), ("fgate_bias_init", float("nan")), ("mlp_ratio", float("inf"))],
)  # fmt: skip
def test_non_finite_or_non_positive_floats_are_refused_by_name(field, value):
    """Else they fail far from their cause: NaN logits (rope_base), "qk_bound must be finite" at every forward
    (qk_bound_safety), "log_fgate must be <= 0" (init_std, fgate_bias_init), OverflowError (mlp_ratio)."""
    with pytest.raises(ValueError, match=field):
        ModelConfig(**SMALL, variant="transformer", **{field: value})
