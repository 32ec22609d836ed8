"""foxacp: Forgetting Transformers with Adaptive Computation Pruning."""

from .infer import load
from .ops import ACPStats, forgetting_attention, set_value_checks

__all__ = ["ACPStats", "forgetting_attention", "load", "set_value_checks"]
__version__ = "0.1.0"
