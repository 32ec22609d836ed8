"""Plots of a run from its log.jsonl: loss, ACP saving, and held-out loss by token position."""

from __future__ import annotations

import io
from pathlib import Path

from foxacp.eval import plot_position_loss
from foxacp.io import atomic_write

from .metrics import read_log


def _by_step(records: list[dict], kind: str) -> list[dict]:
    """Records of ``kind`` in step order, the latest one kept where a resumed run repeated a step."""
    latest = {r["step"]: r for r in records if r.get("kind") == kind}
    return [latest[s] for s in sorted(latest)]


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write a three-panel PNG for ``run_dir`` (default ``run_dir/plot.png``) and return its path.

    Panels: train and eval loss against tokens; ACP FLOP saving (overall and per layer) against tokens;
    eval loss by token position for the first and last evaluations. Raises FileNotFoundError when the run
    has no log, ValueError when it has no training records yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_log(run_dir)
    train, evals = _by_step(records, "train"), _by_step(records, "eval")
    if not train:
        raise ValueError(f"{run_dir / 'log.jsonl'} has no training records")
    out = Path(out) if out is not None else run_dir / "plot.png"
    if out.is_dir():  # a folder: the plot goes into it
        out = out / "plot.png"
    elif not out.suffix:  # savefig would add ".png" itself, and the path returned would not be the file
        out = out.with_suffix(".png")

    fig, (ax_loss, ax_acp, ax_pos) = plt.subplots(1, 3, figsize=(17, 4.8))
    ax_loss.plot([r["tokens"] for r in train], [r["loss"] for r in train], label="train")
    if evals:
        ax_loss.plot([r["tokens"] for r in evals], [r["loss"] for r in evals], "o-", label="eval")
    ax_loss.set(xlabel="tokens", ylabel="loss (nats/token)", title="loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)

    acp = [r for r in train if "acp_saving" in r]
    if acp:
        x = [r["tokens"] for r in acp]
        for layer in range(len(acp[0]["acp_layer"])):
            ax_acp.plot(x, [100 * r["acp_layer"][layer] for r in acp], lw=0.8, alpha=0.5, label=f"layer {layer}")
        ax_acp.plot(x, [100 * r["acp_saving"] for r in acp], "k", lw=2, label="all layers")
        if len(acp[0]["acp_layer"]) <= 12:
            ax_acp.legend(fontsize=7, ncol=2)
    ax_acp.set(xlabel="tokens", ylabel="attention FLOPs skipped (%)", title="ACP saving", ylim=(0, 100))
    ax_acp.grid(alpha=0.3)

    for r, style in ((evals[0], "--"), (evals[-1], "-")) if evals else ():
        plot_position_loss(ax_pos, r["position_loss"], r["bucket_size"], style, label=f"step {r['step']}")
        if len(evals) == 1:
            break
    ax_pos.set(xlabel="token position", ylabel="eval loss", title="eval loss by position")
    if evals:
        ax_pos.legend()
    ax_pos.grid(alpha=0.3)

    fig.suptitle(str(run_dir))
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    atomic_write(Path(out), png.getvalue())  # an interrupted plot leaves the previous one, not a torn file
    return out
