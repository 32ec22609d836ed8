"""The loss-by-position curve of an evaluation record, drawn the same way wherever a plot shows it."""

from __future__ import annotations

import math
from typing import Any


def position_curve(position_loss: list[float | None], bucket_size: int) -> tuple[list[float], list[float]]:
    """Bucket centres (token positions) and mean losses (NaN for empty buckets) of an eval record's
    "position_loss" and "bucket_size" (see :func:`foxacp.eval.loss.position_buckets`)."""
    xs = [(i + 0.5) * bucket_size for i in range(len(position_loss))]
    ys = [math.nan if v is None else v for v in position_loss]
    return xs, ys


def plot_position_loss(ax: Any, position_loss: list[float | None], bucket_size: int, *args: Any, **style: Any) -> None:
    """Draw :func:`position_curve` on the matplotlib axes ``ax``; ``args`` and ``style`` go to ``ax.plot``."""
    ax.plot(*position_curve(position_loss, bucket_size), *args, **style)
