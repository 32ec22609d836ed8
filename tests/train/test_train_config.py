"""TrainConfig presets and overrides; the optimizer's parameter groups; the learning-rate schedule."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from foxacp.model import MODEL_PRESETS, FoxLM, ModelConfig
from foxacp.train.config import (
    PRESETS,
    ConfigError,
    TrainConfig,
    build_model_config,
    parse_overrides,
    preset_config,
)
from foxacp.train.optim import build_optimizer, lr_at, param_groups


def test_presets_name_model_presets_and_paper_learning_rates():
    assert set(PRESETS) == {"tiny", "125M", "360M", "760M"}
    for name in PRESETS:
        cfg = preset_config(name)
        assert cfg.model in MODEL_PRESETS
        cfg.grad_accum_steps(1)  # the batch settings divide
    assert [preset_config(n).lr for n in ("125M", "360M", "760M")] == [2e-3, 2e-3, 1e-3]
    assert preset_config("125M").global_batch_tokens == 2**19
    assert preset_config("125M").warmup_tokens == 256_000_000
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_config("1B")


def test_overrides_are_typed_by_the_dataclass_fields():
    cfg = parse_overrides(
        preset_config("tiny"),
        [
            "lr=3e-4",
            "max_tokens=2.5e6",
            "steps=1_000",
            "compile=true",
            "pack=0",
            "betas=0.9,0.99",
            "peak_tflops=none",
            "corpus=hf:foo@bar:train#text",
            "model.acp=false",
            "model.n_layers=2",
            "model.attn_backend=torch",
        ],
    )
    assert cfg.lr == 3e-4 and cfg.max_tokens == 2_500_000 and cfg.steps == 1000
    assert cfg.compile is True and cfg.pack is False and cfg.betas == (0.9, 0.99)
    assert cfg.peak_tflops is None and cfg.corpus == "hf:foo@bar:train#text"
    assert cfg.model_overrides == {"acp": False, "n_layers": 2, "attn_backend": "torch"}
    mcfg = build_model_config(cfg, vocab_size=257)
    assert mcfg.acp is False and mcfg.n_layers == 2 and mcfg.record_acp_stats is True
    assert mcfg.vocab_size == 320  # the tokenizer's 257 rounded up to a multiple of 64


@pytest.mark.parametrize(
    "item, message",
    [
        ("lr", "not of the form key=value"),
        ("=3", "not of the form key=value"),
        ("learning_rate=1e-3", "unknown field 'learning_rate'"),
        ("acp=false", "did you mean model.acp"),
        ("model.n_layer=2", "unknown model field 'n_layer'"),
        ("steps=ten", "not an integer"),
        ("steps=1.5", "not an integer"),
        ("lr=fast", "not a number"),
        ("compile=maybe", "not a boolean"),
        ("betas=0.9", "expected 2 comma-separated values"),
        ("model.acp=perhaps", "not a boolean"),
        ("model_overrides=x", "cannot be overridden"),
    ],
)
def test_bad_overrides_raise_clear_errors(item, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides(preset_config("tiny"), [item])


def test_bad_model_config_and_batch_split_raise():
    with pytest.raises(ConfigError, match="n_heads"):
        build_model_config(parse_overrides(TrainConfig(), ["model.n_heads=5"]))
    with pytest.raises(ConfigError, match="smaller than the tokenizer"):
        build_model_config(parse_overrides(TrainConfig(), ["model.vocab_size=100"]), vocab_size=257)
    cfg = TrainConfig(seq_len=256, micro_batch_size=4, global_batch_tokens=4096)
    assert cfg.grad_accum_steps(1) == 4 and cfg.grad_accum_steps(2) == 2 and cfg.grad_accum_steps(4) == 1
    with pytest.raises(ConfigError, match="not a multiple"):
        cfg.grad_accum_steps(8)


def test_config_round_trips_through_json(tmp_path):
    cfg = parse_overrides(preset_config("125M"), ["model.acp=false", "betas=0.8,0.9"])
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg


def test_schedule_warmup_then_cosine_in_tokens():
    cfg = TrainConfig(lr=1e-3, min_lr_ratio=0.1, warmup_tokens=1000, global_batch_tokens=100, steps=110)
    assert cfg.total_tokens == 11_000
    assert lr_at(0, cfg) == 0.0
    assert lr_at(500, cfg) == pytest.approx(5e-4)
    assert lr_at(1000, cfg) == pytest.approx(1e-3)
    assert lr_at(6000, cfg) == pytest.approx(0.5 * (1e-3 + 1e-4))  # half way through the cosine
    expected = 1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert lr_at(3500, cfg) == pytest.approx(expected)
    assert lr_at(11_000, cfg) == pytest.approx(1e-4)
    assert lr_at(50_000, cfg) == pytest.approx(1e-4)  # flat after the run
    lrs = [lr_at(t, cfg) for t in range(1000, 11_001, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_weight_decay_on_weights_and_embeddings_only():
    model = FoxLM(ModelConfig(vocab_size=64, n_layers=2, d_model=32, n_heads=2, attn_backend="torch"))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in decay["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in ids}
    for name, _ in model.named_parameters():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        is_matrix = isinstance(module, (nn.Linear, nn.Embedding)) and name.endswith("weight")
        assert (name in names) == is_matrix, name
    assert "embed.weight" in names and "lm_head.weight" in names
    assert "blocks.0.attn.fgate.weight" in names
    assert "blocks.0.attn.fgate.bias" not in names and "norm.weight" not in names
    assert "blocks.0.attn.q_norm.weight" not in names
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    opt = build_optimizer(model, TrainConfig())
    assert opt.defaults["betas"] == (0.9, 0.95)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


@pytest.mark.parametrize(
    "item, message",
    [
        ("seq_len=0", "seq_len must be a positive integer, got 0"),
        ("micro_batch_size=0", "micro_batch_size must be a positive integer"),
        ("global_batch_tokens=-4096", "global_batch_tokens must be a positive integer"),
        ("log_every=0", "log_every must be a positive integer"),
        ("steps=0", "steps must be a positive integer or none"),
        ("steps=-3", "steps must be a positive integer or none"),
        ("max_tokens=0", "max_tokens must be a positive integer"),
        ("grad_clip=-1", r"grad_clip must be a finite number >= 0 \(0: no clipping\), got -1.0"),
        ("grad_clip=nan", "grad_clip must be"),
        ("lr=inf", "lr must be a finite number > 0, got inf"),
        ("lr=nan", "lr must be a finite number > 0, got nan"),
        ("lr=-1e-3", "lr must be a finite number > 0"),
        ("lr=0", "lr must be a finite number > 0"),
        ("warmup_tokens=-1", "warmup_tokens must be an integer >= 0"),
        ("min_lr_ratio=1.5", r"min_lr_ratio must be a number in \[0, 1\]"),
        ("weight_decay=-0.1", "weight_decay must be a finite number >= 0"),
        ("betas=0.9,1.0", r"betas must be two numbers in \[0, 1\)"),
        ("adam_eps=0", "adam_eps must be a finite number > 0"),
        ("seed=-1", "seed must be an integer >= 0"),
        ("dtype=fp16", "dtype must be bf16 or fp32"),
        ("device=tpu", "device must be auto, cpu or cuda"),
        ("eval_every=-1", "eval_every must be an integer >= 0"),
        ("eval_batches=0", "eval_batches must be a positive integer"),
        ("eval_buckets=0", "eval_buckets must be a positive integer"),
        ("ckpt_every=-1", "ckpt_every must be an integer >= 0"),
        ("ckpt_keep=-1", "ckpt_keep must be an integer >= 0"),
        ("peak_tflops=0", "peak_tflops must be a finite number > 0 or none"),
        ("corpus=", "corpus must be a corpus spec"),
        ("tokenizer= ", "tokenizer must be a tokenizer spec"),
        ("cache_dir=", "cache_dir must be a folder path"),
        ("out=", "out must be a folder path or none"),
        ("model=", "model must be the name of a model preset"),
        ("passkey_fraction=1", r"passkey_fraction must be a number in \[0, 1\)"),
        ("passkey_fraction=-0.01", "passkey_fraction must be a number in"),
    ],
)
def test_every_bad_field_value_is_refused_in_one_line_naming_it(item, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_overrides(preset_config("tiny"), [item])
    assert "\n" not in str(info.value)


def test_every_field_has_a_rule_and_python_values_are_checked_too():
    from foxacp.train.config import RULES

    assert set(RULES) == {f.name for f in dataclasses.fields(TrainConfig)}
    for name, value in [("seq_len", True), ("lr", "1e-3"), ("pack", 1), ("betas", [0.9, 0.95]), ("steps", 2.0)]:
        with pytest.raises(ConfigError, match=f"^{name} must be"):
            TrainConfig(**{name: value})
    assert TrainConfig(grad_clip=0).grad_clip == 0  # 0 turns clipping off (documented)


def test_a_malformed_config_file_names_itself(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"lr": ')
    with pytest.raises(ConfigError, match="config.json is not a valid training config"):
        TrainConfig.load(path)
    path.write_text('{"lr": -1}')
    with pytest.raises(ConfigError, match="lr must be a finite number > 0"):
        TrainConfig.load(path)


def test_compile_is_auto_by_default_and_on_only_on_cuda():
    from foxacp.train.distributed import compile_wanted

    cfg = preset_config("tiny")
    assert cfg.compile == "auto"
    assert parse_overrides(cfg, ["compile=auto"]).compile == "auto"
    assert parse_overrides(cfg, ["compile=false"]).compile is False
    assert compile_wanted("auto", torch.device("cpu")) is False
    assert compile_wanted("auto", torch.device("cuda", 0)) is True
    assert compile_wanted(True, torch.device("cpu")) is True
    with pytest.raises(ConfigError, match="compile must be true, false or auto"):
        TrainConfig(compile="yes")
    with pytest.raises(ValueError, match="compile"):
        compile_wanted("yes", torch.device("cpu"))
