"""Forgetting attention with Adaptive Computation Pruning."""

from .acp import DEFAULT_LOG_EPS, AcpPlan, AcpStats
from .attention import forgetting_attention
from .kvcache import forgetting_attention_with_kvcache
from .paged import forgetting_attention_with_paged_kvcache
from .search import make_plan, prepare_search
from .skinny import skinny_linear
from .validate import set_value_checks

__all__ = [
    "AcpStats",
    "AcpPlan",
    "DEFAULT_LOG_EPS",
    "forgetting_attention",
    "forgetting_attention_with_kvcache",
    "forgetting_attention_with_paged_kvcache",
    "make_plan",
    "prepare_search",
    "set_value_checks",
    "skinny_linear",
]
