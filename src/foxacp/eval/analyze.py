"""``foxacp analyze``: where a trained model's ACP prunes on one document, and how the saving moves with eps and
the tile size.

    record = run_analyze("runs/125m", "held_out/", "analysis/")   # writes analyze.json + PNGs
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from foxacp.io import atomic_write
from foxacp.ops.config import kernel_config

from .long_loss import read_documents
from .plot import pyplot
from .pruning import LayerInputs, attention_inputs, check_log_eps, head_savings, layer_plan, total_saving
from .report import DTYPES, load_model_and_tokenizer, provenance
from .search_time import search_share

LOG_EPS_SWEEP = tuple(float(-e) for e in range(1, 21))  # log eps from -1 to -20
TILE_SWEEP = (1, 16, 32, 64, 128, 256)  # 1: the element-level limit of pruning
MAP_PIXELS = 512  # decay maps are subsampled to at most this many rows and columns


def _picked_heads(saving: torch.Tensor, per_layer: int, max_layers: int) -> list[tuple[int, int]]:
    """(layer, head) pairs to draw: up to ``max_layers`` evenly spaced layers, in each ``per_layer`` heads (at most
    all of them) at evenly spaced ranks of saving: the least first, then (from 2) the most, (at 3) the median."""
    L, H = saving.shape
    out = []
    for layer in _spaced(L, max_layers):
        order = saving[layer].argsort(stable=True).tolist()  # ties keep head order: reproducible picks
        out += [(layer, h) for h in sorted(order[r] for r in _spaced(H, per_layer))]
    return out


def _spaced(n: int, k: int) -> list[int]:
    """min(n, k) distinct indices of range(n), evenly spaced, 0 and (if k > 1) n - 1 included."""
    k = min(n, k)
    return sorted({(i * (n - 1) + (k - 1) // 2) // max(1, k - 1) for i in range(k)})


def run_analyze(
    path: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    max_len: int | None = None,
    log_eps: float | None = None,
    tile: int | None = None,
    heads_per_layer: int = 3,
    max_layers: int = 6,
    log_eps_sweep: Sequence[float] = LOG_EPS_SWEEP,
    tile_sweep: Sequence[int] = TILE_SWEEP,
    progress: bool = True,
) -> dict[str, Any]:
    """Analyse ACP on the longest document at ``data`` (cut to ``max_len`` tokens, default the training
    context); write ``out``/analyze.json and decay_maps.png, head_saving.png (heatmap and histogram),
    saving_vs_log_eps.png, saving_vs_tile.png.

    ``dtype``: "float32", "bfloat16" or "float16" (see ``report.DTYPES``); ``log_eps``: default the model's;
    ``tile``: square ACP tile, default the device's grid (tile_m x tile_n).

    Returns the record: {"meta", "tokens", "log_eps", "tile", "head_saving": [L][Hq], "layer_saving": [L],
    "total_saving", "log_eps_sweep": {"log_eps", "total", "per_layer"}, "tile_sweep": {"tiles", "total"},
    "decay_map_heads": [[layer, head]], "search_time": on CUDA the boundary search's time and share of the
    attention per layer (``search_time.search_share``), else None}.

    Raises:
        FileNotFoundError: ``data`` does not exist.  CheckpointError: no usable checkpoint at ``path``.
        ValueError: bad numbers, a model without forget gates, or a document shorter than 2 tokens.
    """
    for name, value in (("max_len", max_len), ("tile", tile)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if heads_per_layer < 1 or max_layers < 1:
        raise ValueError(f"heads_per_layer and max_layers must be >= 1, got {heads_per_layer}, {max_layers}")
    if log_eps is not None:
        check_log_eps(log_eps)  # before any work or folder, not first in the plan
    docs = read_documents(data)
    out = Path(out)
    model, tokenizer, train_len = load_model_and_tokenizer(path, device, dtype)
    cfg = model.config
    log_eps = cfg.log_eps if log_eps is None else log_eps
    dev = model.embed.weight.device
    kc = kernel_config(dev, cfg.head_dim)
    grid = (tile, tile) if tile else (kc.tile_m, kc.tile_n)
    ids = max(tokenizer.encode_batch(docs), key=len)[: max_len or train_len]
    if len(ids) < 2:
        raise ValueError("the longest document at --data has fewer than 2 tokens")
    out.mkdir(parents=True, exist_ok=True)  # once every argument was checked: a refused call leaves nothing
    layers = attention_inputs(model, torch.tensor([ids], device=dev))

    saving = head_savings(layers, log_eps=log_eps, tile=grid)
    per_layer = [total_saving([x], log_eps=log_eps, tile=grid) for x in layers]
    eps_rows = [
        [total_saving([x], log_eps=e, tile=grid) for x in layers]
        for e in tqdm(log_eps_sweep, desc="log eps sweep", disable=not progress)
    ]
    tile_totals = [
        total_saving(layers, log_eps=log_eps, tile=t) for t in tqdm(tile_sweep, desc="tile sweep", disable=not progress)
    ]
    heads = _picked_heads(saving, heads_per_layer, max_layers)
    # Timing means something on a GPU only (the CPU runs the kernels through an interpreter).
    timing = search_share(layers, log_eps=log_eps, dtype=DTYPES[dtype]) if dev.type == "cuda" else None
    record = {
        "meta": {**provenance(path, data, dev), "training_context": train_len, "variant": cfg.variant, "dtype": dtype},
        "tokens": len(ids),
        "log_eps": log_eps,
        "tile": list(grid),
        "head_saving": saving.tolist(),
        "layer_saving": per_layer,
        "total_saving": total_saving(layers, log_eps=log_eps, tile=grid),
        "log_eps_sweep": {
            "log_eps": list(log_eps_sweep),
            # Every layer has the same causal tiles on one document: the total is the layers' plain mean.
            "total": [sum(r) / len(r) for r in eps_rows],
            "per_layer": [list(col) for col in zip(*eps_rows, strict=True)],
        },
        "tile_sweep": {"tiles": list(tile_sweep), "total": tile_totals},
        "decay_map_heads": [list(p) for p in heads],
        "search_time": timing,
    }
    # An earlier analysis's files go first (analyze.json first: written last, it marks a complete folder).
    for name in ANALYZE_FILES:
        (out / name).unlink(missing_ok=True)
    _plots(record, layers, out)
    atomic_write(out / "analyze.json", json.dumps(record, indent=1))
    return record


ANALYZE_FILES = ("analyze.json", "decay_maps.png", "head_saving.png", "saving_vs_log_eps.png", "saving_vs_tile.png")


def _names(record: dict[str, Any]) -> str:
    m = record["meta"]
    commit = m["commit"][:10] + ("-dirty" if m["commit"].endswith("-dirty") else "")
    return f"{m['model']}\ndata {m['data']} | commit {commit} | {m['device']}"


def _plots(record: dict[str, Any], layers: list[LayerInputs], out: Path) -> None:
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    names, T = _names(record), record["tokens"]
    tm, tn = record["tile"]

    # Decay maps with the ACP boundary: keys left of the step line are skipped for that query tile.
    heads = record["decay_map_heads"]
    rows = sorted({layer for layer, _ in heads})
    cols = max(sum(1 for la, _ in heads if la == r) for r in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(3.4 * cols + 1.2, 3.1 * len(rows) + 0.9), squeeze=False, layout="constrained"
    )
    step = max(1, math.ceil(T / MAP_PIXELS))
    for ax in axes.flat:
        ax.set_visible(False)
    for r, layer in enumerate(rows):
        for c, (_, head) in enumerate([p for p in heads if p[0] == layer]):
            ax = axes[r][c]
            ax.set_visible(True)
            # Above the diagonal (-inf) becomes NaN, drawn blank.
            d = layers[layer].decay(head, step).clamp_min(-60).float().cpu()
            d = d.masked_fill(torch.ones_like(d, dtype=torch.bool).triu(1), math.nan)
            im = ax.imshow(d.numpy(), cmap="viridis", vmin=-60, vmax=0, extent=(0, T, T, 0), interpolation="nearest")
            kv_lo = layer_plan(layers[layer], log_eps=record["log_eps"], tile=(tm, tn)).kv_lo[0, head].tolist()
            xs, ys = [], []
            for m, lo in enumerate(kv_lo):
                top, bottom = m * tm, min((m + 1) * tm, T)
                xs += [lo * tn, lo * tn]
                ys += [top, bottom]
            ax.plot(xs, ys, color="red", linewidth=1.2)
            ax.set_xlim(0, T)
            ax.set_ylim(T, 0)
            ax.set_title(
                f"layer {layer} head {head}: {100 * record['head_saving'][layer][head]:.0f}% saved", fontsize=8
            )
            ax.set_xlabel("key j", fontsize=7)
            ax.set_ylabel("query i", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.colorbar(im, ax=axes.ravel().tolist(), label="D_ij = c_i - c_j (clipped at -60)", shrink=0.8)
    fig.suptitle(f"decay maps, ACP boundary in red (log eps {record['log_eps']}, tiles {tm}x{tn})\n{names}", fontsize=8)
    fig.savefig(out / "decay_maps.png", dpi=100)
    plt.close(fig)

    # Per-head saving: heatmap and histogram.
    sav = record["head_saving"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    im = ax1.imshow(sav, vmin=0, vmax=1, cmap="magma", aspect="auto")
    ax1.set_xlabel("head")
    ax1.set_ylabel("layer")
    for a in (ax1.xaxis, ax1.yaxis, ax2.yaxis):
        a.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(im, ax=ax1, label="FLOP saving")
    ax2.hist([v for row in sav for v in row], bins=20, range=(0, 1), color="C0")
    ax2.set_xlabel("FLOP saving of a head")
    ax2.set_ylabel("heads")
    ax2.set_title(f"total {100 * record['total_saving']:.1f}% of causal tiles skipped", fontsize=9)
    fig.suptitle(f"ACP saving per head, {T} tokens, log eps {record['log_eps']}, tiles {tm}x{tn}\n{names}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "head_saving.png", dpi=110)
    plt.close(fig)

    # Saving against log eps (every layer and the total) and against the tile size.
    sweep = record["log_eps_sweep"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, row in enumerate(sweep["per_layer"]):
        ax.plot(sweep["log_eps"], row, color=plt.cm.viridis(i / max(1, len(sweep["per_layer"]) - 1)), alpha=0.6)
    ax.plot(sweep["log_eps"], sweep["total"], "k-o", markersize=3, label="all layers (thin: each layer)")
    ax.axvline(
        record["log_eps"], color="r", linestyle="--", linewidth=1, label=f"model's log eps ({record['log_eps']})"
    )
    ax.set_xlabel("log eps")
    ax.set_ylabel("FLOP saving")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"saving against log eps, {T} tokens, tiles {tm}x{tn}\n{names}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "saving_vs_log_eps.png", dpi=110)
    plt.close(fig)

    ts = record["tile_sweep"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(ts["tiles"], ts["total"], "k-o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("square tile size (1: element-level limit)")
    ax.set_ylabel("FLOP saving")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(f"saving against the tile size, {T} tokens, log eps {record['log_eps']}\n{names}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "saving_vs_tile.png", dpi=110)
    plt.close(fig)
