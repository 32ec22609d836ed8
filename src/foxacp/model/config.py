"""Model configuration, the size presets, and the parameter / FLOP counts derived from them."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

from ..ops.acp import DEFAULT_LOG_EPS
from ..ops.validate import BACKENDS

VARIANTS = ("fox_pro", "fox", "transformer")
ATTN_BACKENDS = (None, *BACKENDS)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a FoX language model.

    variant:
        "fox_pro": forgetting attention with token shift on k/v, QK-norm, output norm + gate (no RoPE).
        "fox": LLaMA-style forgetting attention (forget gate only).
        "transformer": LLaMA-style softmax attention with RoPE, no forget gate (always exact).
    acp / log_eps: Adaptive Computation Pruning with tolerance eps = exp(log_eps); acp=False is exact.
    mlp_ratio: None picks 3.5 for fox_pro and 4 otherwise (see ``mlp_hidden``).
    fgate_bias_init: initial forget-gate bias b_f. 0 (the papers' "biases 0") gives f = sigmoid(W_f x),
        about 0.5 at init (fast forgetting, so ACP prunes a lot early in training); a positive value
        such as 5 starts with slow forgetting (f ~ 0.99).
    qk_norm_eps: eps of the QK-norm (fox_pro); None uses norm_eps. The official FoX checkpoints need 1e-5 there
        while their other norms use their config's norm_eps (foxacp.hf.official).
    qk_bound_safety: factor on the static QK-norm logit bound that covers bf16 rounding of q and k.
    record_acp_stats: keep each layer's ``AcpStats`` from the last forward (see ``FoxLM.acp_stats``).
    attn_backend: backend of ``forgetting_attention``: None (auto), "triton", "torch", "reference".
        The Triton kernels want head_dim in (16, 32, 64, 128).

    Raises:
        ValueError: unknown variant or backend, non-positive sizes, d_model not divisible by n_heads,
            n_heads not a multiple of n_kv_heads, odd head_dim with RoPE, a non-negative log_eps, a non-positive
            qk_norm_eps, norm_eps or init_std, a qk_bound_safety below 1.
    """

    vocab_size: int = 32768
    n_layers: int = 12
    d_model: int = 768
    n_heads: int = 12
    n_kv_heads: int | None = None  # None: n_heads (no GQA)
    mlp_ratio: float | None = None
    variant: str = "fox_pro"
    acp: bool = True
    log_eps: float = DEFAULT_LOG_EPS
    norm_eps: float = 1e-5
    qk_norm_eps: float | None = None  # None: norm_eps
    rope_base: float = 10000.0
    init_std: float = 0.02
    fgate_bias_init: float = 0.0
    qk_bound_safety: float = 1.02
    record_acp_stats: bool = False
    attn_backend: str | None = None

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {VARIANTS}")
        if self.attn_backend not in ATTN_BACKENDS:
            raise ValueError(f"unknown attn_backend {self.attn_backend!r}; expected one of {ATTN_BACKENDS}")
        for name in ("vocab_size", "n_layers", "d_model", "n_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.n_kv_heads is not None and (self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads):
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.variant == "transformer" and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")
        if not self.log_eps < 0:
            raise ValueError(f"log_eps must be negative, got {self.log_eps}")
        if self.qk_norm_eps is not None and not self.qk_norm_eps > 0:
            raise ValueError(f"qk_norm_eps must be positive or None, got {self.qk_norm_eps}")
        finite = ("mlp_ratio", "norm_eps", "init_std", "qk_norm_eps", "fgate_bias_init", "qk_bound_safety", "rope_base")
        for name in finite:  # inf and NaN pass the comparisons below and fail later, far from their cause
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.mlp_ratio is not None and self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        for name in ("norm_eps", "init_std", "rope_base"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.qk_bound_safety >= 1:  # below 1 the static bound undercuts the logits: ACP's eps voided
            raise ValueError(f"qk_bound_safety must be >= 1, got {self.qk_bound_safety}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (n_kv_heads, or n_heads without GQA)."""
        return self.n_kv_heads or self.n_heads

    @property
    def pro(self) -> bool:
        """Token shift, QK-norm and output norm + gate are on (the "fox_pro" variant)."""
        return self.variant == "fox_pro"

    @property
    def has_fgate(self) -> bool:
        return self.variant != "transformer"

    @property
    def attn_log_eps(self) -> float | None:
        """The log_eps handed to the op: None (exact) without ACP or without a forget gate."""
        return self.log_eps if self.acp and self.has_fgate else None

    @classmethod
    def from_preset(cls, name: str, **overrides) -> ModelConfig:
        """The preset ``name`` from MODEL_PRESETS with ``overrides`` applied (e.g. vocab_size, variant).

        Raises:
            ValueError: unknown preset (or an invalid override).
        """
        if name not in MODEL_PRESETS:
            raise ValueError(f"unknown model preset {name!r}; expected one of {tuple(MODEL_PRESETS)}")
        return replace(MODEL_PRESETS[name], **overrides)


# Sizes from the FoX / ACP papers (head dim 64); "tiny" (head dim 32) trains on a laptop CPU in minutes.
# vocab_size is usually replaced by the tokenizer's (tiny's 320: 256 bytes + EOS, rounded up to 64).
MODEL_PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(vocab_size=320, n_layers=4, d_model=128, n_heads=4),
    "125M": ModelConfig(n_layers=12, d_model=768, n_heads=12),
    "360M": ModelConfig(n_layers=24, d_model=1024, n_heads=16),
    "760M": ModelConfig(n_layers=24, d_model=1536, n_heads=24),
}


def mlp_hidden(cfg: ModelConfig) -> int:
    """SwiGLU hidden size: d_model * ratio * 2/3 rounded up to a multiple of 256 (ratio 3.5 Pro, else 4)."""
    ratio = cfg.mlp_ratio if cfg.mlp_ratio is not None else (3.5 if cfg.pro else 4.0)
    return math.ceil(Fraction(cfg.d_model) * Fraction(ratio) * 2 / 3 / 256) * 256


def _layer_matmul_params(cfg: ModelConfig) -> int:
    """Weights of the Linear layers of one block (the parameters that cost 2 FLOPs per token each)."""
    d, d_kv, hq, hkv = cfg.d_model, cfg.kv_heads * cfg.head_dim, cfg.n_heads, cfg.kv_heads
    n = 2 * d * d + 2 * d * d_kv + 3 * d * mlp_hidden(cfg)  # W_q, W_o, W_k, W_v, SwiGLU
    if cfg.has_fgate:
        n += d * hq  # W_f
    if cfg.pro:
        n += 2 * d * hkv + d * d  # token-shift W_a for k and v, output gate W_g
    return n


def n_params(cfg: ModelConfig, *, embedding: bool = True) -> int:
    """Exact parameter count of ``FoxLM(cfg)``, without building it.

    embedding=False leaves out the token embedding (the LM head is untied and always counted).
    """
    d, d_kv = cfg.d_model, cfg.kv_heads * cfg.head_dim
    per_layer = _layer_matmul_params(cfg) + 2 * d  # + the two pre-norm gains
    if cfg.has_fgate:
        per_layer += cfg.n_heads  # b_f
    if cfg.pro:
        per_layer += d + d_kv + d  # q-norm, k-norm and output-norm gains
    total = cfg.n_layers * per_layer + d + cfg.vocab_size * d  # final norm, LM head
    return total + (cfg.vocab_size * d if embedding else 0)


def flops_per_token(cfg: ModelConfig, seq_len: float, attn_fraction: float = 1.0) -> float:
    """Training (forward + backward) matmul FLOPs per token, for MFU.

    6 FLOPs per matmul parameter (embedding lookup excluded, LM head included) plus causal attention:
    QK^T and PV cost 2 * 2 * d_model FLOPs per (query, key) pair forward, 3x that with the backward,
    over seq_len / 2 keys on average, times ``attn_fraction``, the share of causal tiles actually
    visited (1 - AcpStats.flop_saving; 1.0 for dense attention).
    """
    matmul = cfg.n_layers * _layer_matmul_params(cfg) + cfg.vocab_size * cfg.d_model
    attn = cfg.n_layers * 6 * cfg.d_model * seq_len * attn_fraction
    return 6.0 * matmul + attn
