"""Hugging Face transformers integration (needs the ``hf`` extra).

Importing ``foxacp.hf`` registers model_type "foxacp" with AutoConfig, AutoModel and AutoModelForCausalLM, after
which ``AutoModelForCausalLM.from_pretrained(path)`` gives a FoxForCausalLM; its generate() runs on a FoxCache, or
on a FoxStaticCache with ``cache_implementation="static"``. ``load_official`` reads the official
FoX checkpoints (zhixuan-lin/forgetting-transformer) into a FoxLM; ``FoxForCausalLM.from_foxlm`` wraps one.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .cache import FoxCache
from .config import FoxConfig
from .modeling import FoxForCausalLM, packed_logits
from .official import OfficialCheckpointError, load_official
from .static import FoxStaticCache

AutoConfig.register(FoxConfig.model_type, FoxConfig, exist_ok=True)
AutoModel.register(FoxConfig, FoxForCausalLM, exist_ok=True)
AutoModelForCausalLM.register(FoxConfig, FoxForCausalLM, exist_ok=True)

__all__ = [
    "FoxCache",
    "FoxConfig",
    "FoxForCausalLM",
    "FoxStaticCache",
    "OfficialCheckpointError",
    "load_official",
    "packed_logits",
]
