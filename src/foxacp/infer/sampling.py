"""Next-token sampling on the device: greedy, temperature, top-k and nucleus (top-p), never synchronising."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raises ValueError for temperature < 0 (or not finite), top_k < 1, or top_p outside (0, 1]. Any real
    number type passes (a numpy scalar, a 0-d tensor's item)."""
    if not _real(temperature) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite real number >= 0, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
    if top_p is not None and (not _real(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def _real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def sample(
    logits: Tensor,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token per row: logits (B, V) float -> (B,) int64, on the logits' device.

    temperature 0 is greedy (argmax; top_k and top_p then change nothing). Otherwise the logits are divided
    by the temperature, cut to the top_k largest and to the smallest set whose probability reaches top_p,
    and a token is drawn with ``generator``. The draw is argmax(p / E) with E ~ Exp(1) per token, which picks
    token i with probability p_i and needs no host read (it captures in a CUDA graph). Ties in the top_k
    cut keep every tied token.
    """
    if temperature < torch.finfo(torch.float32).smallest_normal:  # 0, or so small that float32 makes it 0 (NaN)
        return logits.argmax(-1)
    logits = logits.float()
    # Shifted to a row maximum of 0 first: a tiny temperature then sends the others to -inf (near greedy), where
    # dividing first would overflow to inf - inf = NaN.
    logits = (logits - logits.amax(-1, keepdim=True)) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # A token is cut when the tokens ranked before it already hold top_p (the first always stays).
        cut = (probs.cumsum(-1) - probs) >= top_p
        logits = logits.masked_fill(cut.scatter(-1, order, cut), -torch.inf)
    probs = logits.softmax(-1)
    race = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / race).argmax(-1)
