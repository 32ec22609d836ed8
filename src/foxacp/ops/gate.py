"""The cumulative log forget gate c_t = sum_{l <= t} log f_l, restarting at every sequence start.

It is kept in float64: at 64k tokens c reaches -1e5, where float32 spacing (~1e-2) would swamp the small
differences D_ij = c_i - c_j near the diagonal. Kernels subtract a per-block float64 reference before
dropping to float32, so every D they use is a difference of two small, exact numbers.

Every gate is first raised to LOG_FGATE_FLOOR (-inf, f = 0, is an exact reset and lands there too): across
such a token every weight is e^-1e6 = 0 in float64 for any logits below 4.9e5 in magnitude, so the floor
changes no result, and it keeps every c finite.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOG_FGATE_FLOOR = -1.0e6


def sequence_ids(cu: Tensor, total: int) -> Tensor:
    """(total,) int64: the index of the sequence each packed row belongs to."""
    lengths = (cu[1:] - cu[:-1]).long()
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=cu.device), lengths, output_size=total)


def cumulative_gate(log_fgate: Tensor, cu_k: Tensor, uniform: bool, num_seqs: int) -> Tensor:
    """Per-sequence cumulative sum of the log forget gate, in float64 (differentiable).

    Args:
        log_fgate: (total_k, Hq) float32 or float64, packed over sequences; raised to LOG_FGATE_FLOOR.
        cu_k: (N+1,) int32 sequence offsets into the packed rows.
        uniform: all N sequences have the same length (a plain batch): a reshape replaces the segment sums.
        num_seqs: N.
    Returns:
        c_t: (Hq, total_k) float64, contiguous (heads first: the scan and the kernels read along tokens).
    """
    total, heads = log_fgate.shape
    g = torch.empty(heads, total, dtype=torch.float64, device=log_fgate.device).copy_(log_fgate.t())
    g = g.clamp_min(LOG_FGATE_FLOOR)
    if uniform:
        return g.view(heads, num_seqs, total // num_seqs).cumsum(-1).view(heads, total)
    # One scan per sequence (a host read of the lengths: this is the slow path). A scan over all rows minus each
    # sequence's start would carry earlier sequences' magnitude (rounding) and NaNs into later ones.
    lengths = (cu_k[1:] - cu_k[:-1]).tolist()
    return torch.cat([part.cumsum(-1) for part in g.split(lengths, dim=1)], dim=1)
