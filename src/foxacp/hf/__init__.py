"""Hugging Face transformers integration (needs the ``hf`` extra).

Importing ``foxacp.hf`` registers model_type "foxacp" with AutoConfig, AutoModel and AutoModelForCausalLM, after
which ``AutoModelForCausalLM.from_pretrained(path)`` gives a FoxForCausalLM.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .cache import FoxCache
from .config import FoxConfig
from .modeling import FoxForCausalLM, packed_logits

AutoConfig.register(FoxConfig.model_type, FoxConfig, exist_ok=True)
AutoModel.register(FoxConfig, FoxForCausalLM, exist_ok=True)
AutoModelForCausalLM.register(FoxConfig, FoxForCausalLM, exist_ok=True)

__all__ = ["FoxCache", "FoxConfig", "FoxForCausalLM", "packed_logits"]
