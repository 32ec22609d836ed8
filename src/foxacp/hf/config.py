"""FoxConfig: foxacp's ModelConfig as a transformers configuration (model_type "foxacp")."""

from __future__ import annotations

import dataclasses

from transformers import PretrainedConfig

from foxacp.model import ModelConfig

# ModelConfig's fields and defaults: FoxConfig takes and saves exactly these, so the two never drift apart.
MODEL_FIELDS: dict[str, object] = {f.name: f.default for f in dataclasses.fields(ModelConfig)}


class FoxConfig(PretrainedConfig):
    """A ModelConfig carried by transformers: every ModelConfig field is an attribute of the same name.

    ``FoxConfig(**fields)`` takes ModelConfig's fields (missing ones get ModelConfig's defaults) and the usual
    PretrainedConfig keywords (eos_token_id, ...); ``FoxConfig.from_model_config(cfg)`` and
    ``to_model_config()`` convert. transformers' generic names (hidden_size, num_hidden_layers,
    num_attention_heads, num_key_value_heads) read the ModelConfig fields they mean.

    Raises:
        ValueError: the fields do not make a valid ModelConfig (checked here, so a bad config.json fails at load).
    """

    model_type = "foxacp"
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
    }

    def __init__(self, **kwargs) -> None:
        for alias, name in self.attribute_map.items():  # before validation, which reads the fields themselves
            if alias in kwargs:
                value = kwargs.pop(alias)
                if kwargs.setdefault(name, value) != value:
                    raise ValueError(f"{alias}={value!r} contradicts {name}={kwargs[name]!r}")
        if "num_key_value_heads" in kwargs:  # a property here (n_kv_heads None means n_heads), so not an alias
            value = kwargs.pop("num_key_value_heads")
            heads = kwargs.get("n_heads", MODEL_FIELDS["n_heads"])
            if (kwargs.setdefault("n_kv_heads", value) or heads) != value:
                raise ValueError(f"num_key_value_heads={value!r} contradicts n_kv_heads={kwargs['n_kv_heads']!r}")
        for name, default in MODEL_FIELDS.items():
            setattr(self, name, kwargs.pop(name, default))
        self.to_model_config()  # validate now
        kwargs.setdefault("tie_word_embeddings", False)  # FoxLM's LM head is its own matrix
        # transformers 5's configs declare these themselves (PretrainedConfig no longer does): code that reads or sets
        # ``config.pad_token_id`` must find them. use_cache: a forward returns its cache unless told not to.
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            kwargs.setdefault(name, None)
        kwargs.setdefault("use_cache", True)
        super().__init__(**kwargs)

    @property
    def num_key_value_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @classmethod
    def from_model_config(cls, cfg: ModelConfig, **kwargs) -> FoxConfig:
        """The FoxConfig of ``cfg``; kwargs are PretrainedConfig keywords (eos_token_id, ...)."""
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
        return cls(**dataclasses.asdict(cfg), **kwargs)

    def to_model_config(self) -> ModelConfig:
        """The ModelConfig these fields describe."""
        return ModelConfig(**{name: getattr(self, name) for name in MODEL_FIELDS})
