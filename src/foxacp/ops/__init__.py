"""Forgetting attention with Adaptive Computation Pruning."""

from .acp import AcpPlan, ACPStats, make_plan
from .attention import DEFAULT_LOG_EPS, forgetting_attention
from .validate import set_value_checks

__all__ = ["ACPStats", "AcpPlan", "DEFAULT_LOG_EPS", "forgetting_attention", "make_plan", "set_value_checks"]
from .kvcache import forgetting_attention_with_kvcache

__all__ += ["forgetting_attention_with_kvcache"]
