"""Plots of evaluation records: the bucketed loss-by-position curve (drawn the same way wherever a plot shows it),
the per-token loss curves of ``foxacp eval`` with their moving average, and the passkey heatmap."""

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


def moving_average(values: list[float | None], window: int) -> list[float]:
    """Moving average over ``window`` positions, centred (an even window reaches one further back than ahead) and
    shrinking at the ends, skipping None/NaN entries; NaN where a window holds none. Raises ValueError for
    window < 1."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    vals = [math.nan if v is None else float(v) for v in values]
    half = window // 2
    out = []
    for i in range(len(vals)):
        part = [v for v in vals[max(0, i - half) : i + window - half] if not math.isnan(v)]
        out.append(sum(part) / len(part) if part else math.nan)
    return out


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss_by_position(
    out: Any, curves: dict[str, list[float | None]], *, train_len: int | None, window: int, title: str, ylabel: str
) -> None:
    """PNG at ``out``: each curve (label -> value per token position) raw and faint, its moving average over
    ``window`` positions on top, and a dashed line at the training context ``train_len``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, (label, ys) in enumerate(curves.items()):
        xs = range(len(ys))
        colour = f"C{i}"
        ax.plot(xs, [math.nan if v is None else v for v in ys], color=colour, alpha=0.25, linewidth=0.6)
        # Later curves dashed: ACP and exact often coincide, and both must stay visible.
        style = "-" if i == 0 else "--"
        label = f"{label} (moving average, {window} tokens)" if window > 1 else label
        ax.plot(xs, moving_average(ys, window), style, color=colour, label=label)
    if train_len is not None:
        ax.axvline(train_len, color="k", linestyle="--", linewidth=1, label=f"training context ({train_len})")
    ax.set_xlabel("token position")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_passkey_heatmap(out: Any, grid: dict[str, Any], *, train_len: int | None, title: str) -> None:
    """PNG at ``out``: a passkey record's accuracy (rows: lengths, columns: depths) as a heatmap with the value
    in each cell; lengths beyond the training context ``train_len`` are marked with '>'."""
    plt = pyplot()
    acc = [[math.nan if v is None else v for v in row] for row in grid["accuracy"]]
    fig, ax = plt.subplots(figsize=(max(6.5, 2 + 0.9 * len(grid["depths"])), 2.4 + 0.45 * len(grid["lengths"])))
    im = ax.imshow(acc, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="lower")
    for i, row in enumerate(acc):
        for j, v in enumerate(row):
            ax.text(j, i, "-" if math.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(grid["depths"])), [f"{100 * d:.0f}%" for d in grid["depths"]])
    marks = [f"{'>' if train_len and n > train_len else ''}{n}" for n in grid["lengths"]]
    ax.set_yticks(range(len(grid["lengths"])), marks)
    ax.set_xlabel("key depth")
    ax.set_ylabel("prompt tokens\n(> past training)")
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, label="exact-match accuracy")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
