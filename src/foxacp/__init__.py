"""foxacp: Forgetting Transformers with Adaptive Computation Pruning."""

from .ops import ACPStats, forgetting_attention, set_value_checks

__all__ = ["ACPStats", "forgetting_attention", "set_value_checks"]
__version__ = "0.1.0"
from .infer import generate
from .ops import forgetting_attention_with_kvcache

__all__ += ["forgetting_attention_with_kvcache"]
__all__ += ["generate"]
