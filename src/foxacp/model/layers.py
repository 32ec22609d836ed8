"""Small building blocks: RMSNorm (whole vector or per head), SwiGLU, token shift, RoPE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foxacp.ops.skinny import skinny_linear


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """x / sqrt(mean(x^2, last dim) + eps) * weight in fp32 (fp64 for fp64 x), returned in x's dtype."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * weight.to(xf.dtype)).to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the last dim. x (..., dim) -> (..., dim); gain ``weight`` (dim,)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


class HeadRMSNorm(nn.Module):
    """RMSNorm of each head's vector with its own gains. x (..., H, D) -> (..., H, D).

    The gains are stored flat, ``weight`` (H * D,), so that every norm gain is a 1-D parameter.
    """

    def __init__(self, n_heads: int, head_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.eps = n_heads, head_dim, eps
        self.weight = nn.Parameter(torch.ones(n_heads * head_dim))

    def gains(self) -> Tensor:
        """The gains as (H, D)."""
        return self.weight.view(self.n_heads, self.head_dim)

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.gains(), self.eps)


class SwiGLU(nn.Module):
    """MLP W_down(silu(W_gate x) * W_up x). x (..., d_model) -> (..., d_model)."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.w_gate = nn.Linear(d_model, hidden, bias=False)
        self.w_up = nn.Linear(d_model, hidden, bias=False)
        self.w_down = nn.Linear(hidden, d_model, bias=False)
        self.fused_in: Tensor | None = None  # [W_gate; W_up] while ``FoxLM.fused_projections`` is active

    def forward(self, x: Tensor) -> Tensor:
        if self.fused_in is None:
            return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))
        gate, up = skinny_linear(x, self.fused_in).chunk(2, dim=-1)
        return skinny_linear(F.silu(gate) * up, self.w_down.weight)


class TokenShift(nn.Module):
    """Data-dependent token shift per head: y'_t = a_t * y_{t-1} + (1 - a_t) * y_t, a = sigmoid(W_a x).

    y_{t-1} is taken as 0 where ``pos == 0`` (the start of every sequence or packed document), so
    nothing leaks across documents.
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, n_heads, bias=False)

    def forward(
        self, x: Tensor, y: Tensor, pos: Tensor, before: Tensor | None = None, logits: Tensor | None = None
    ) -> Tensor:
        """x (B, T, d_model), y (B, T, H, D), pos (B, T) position in document -> (B, T, H, D).

        before (B, H, D): the y row preceding y[:, 0] (a decoding cache's shift state); None means zeros.
        logits (B, T, H): W_a x where the caller computed it already (a fused projection); None computes it.
        """
        a = torch.sigmoid(self.proj(x) if logits is None else logits).unsqueeze(-1)
        if before is None:
            prev = F.pad(y[:, :-1], (0, 0, 0, 0, 1, 0))
        else:
            prev = torch.cat([before[:, None].to(y.dtype), y[:, :-1]], dim=1)
        prev = prev.masked_fill((pos == 0)[:, :, None, None], 0.0)
        # Mixed in fp32 and rounded once, as the official FoX code does (in bf16 each step rounds: ~45% of the
        # elements differed from the fp32 mix, by up to 0.03).
        dtype = torch.promote_types(y.dtype, torch.float32)
        return (y.to(dtype) + a.to(dtype) * (prev.to(dtype) - y.to(dtype))).to(y.dtype)


def apply_rope(x: Tensor, pos: Tensor, base: float) -> Tensor:
    """Rotary embedding (rotate-half layout). x (B, T, H, D), pos (B, T) -> (B, T, H, D), x's dtype.

    Computed in fp32 (fp64 for fp64 inputs).
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    half = x.shape[-1] // 2
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=dtype) / half)
    angle = pos.to(dtype)[:, :, None, None] * inv_freq  # (B, T, 1, D/2)
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x.to(dtype).chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)
