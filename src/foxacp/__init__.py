"""foxacp: Forgetting Transformers with Adaptive Computation Pruning."""

from .infer import generate, load
from .ops import AcpStats, forgetting_attention, forgetting_attention_with_kvcache, set_value_checks

__all__ = [
    "AcpStats",
    "forgetting_attention",
    "forgetting_attention_with_kvcache",
    "generate",
    "load",
    "set_value_checks",
]
__version__ = "0.1.0"
