"""foxacp: Forgetting Transformers with Adaptive Computation Pruning."""

from .ops import ACPStats, forgetting_attention

__all__ = ["ACPStats", "forgetting_attention"]
__version__ = "0.1.0"
