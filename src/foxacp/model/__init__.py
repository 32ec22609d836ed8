"""FoX language models: configuration and presets, layers, and the LM."""

from .config import MODEL_PRESETS, ModelConfig, flops_per_token, mlp_hidden, n_params
from .lm import FoxLM

__all__ = ["MODEL_PRESETS", "FoxLM", "ModelConfig", "flops_per_token", "mlp_hidden", "n_params"]
