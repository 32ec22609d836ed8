"""Training-run evidence: loss, eval loss by position, throughput and ACP saving of several runs side by side.

    python -m foxacp.bench.training RUN_A.jsonl RUN_B.jsonl --labels "ACP on" "ACP off" \\
        --title "125M, 16k context" --stem NAME --note "device, commit, settings"

Reads the JSONL logs written by `foxacp.train` (records of kind "start", "train" and "eval"; see
`foxacp.train.metrics` and `foxacp.train.loop`) and writes training.png, training.md and training.json in
results/<date>-<commit>-training-NAME-<device>/ (under --results-dir; see `foxacp.bench.results`). The PNG
has four panels: train loss against step, the last evaluation's loss by token position, tokens/s against
step, and the last train record's ACP FLOP saving per layer.

Numbers, per run:
- final train / eval loss: the last train record's loss (the mean over its logging window) and the last
  eval record's loss.
- tokens/s: the log's tokens_per_s counts the tokens of all ranks. The mean leaves out the first train
  record after each start record (a run and every resume): its window includes warm-up and compilation.
  Per GPU: the mean of each record's tokens/s over the world_size of the start record before it (a resume
  may change it; omitted where the log has none).
- ACP saving: the mean of acp_saving over the train records (the fraction of causal attention tiles
  skipped), and acp_layer of the last one.
The loss-by-step table puts each run's train loss at every logged step side by side, with |A - B| for the
first two runs. A resumed run that repeated steps keeps the latest record of each step. Fields missing
from older logs (no eval, no ACP stats, no start record) are null in the JSON and "-" in the Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foxacp.eval import plot_position_loss
from foxacp.eval.report import max_abs
from foxacp.io import git_commit, read_jsonl

from .results import RESULTS_ROOT, device_tag, result_dir

STYLES = (("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."))  # (marker, line) per run: overlaps stay visible


@dataclass
class Run:
    """One training log: its first start record ({} if none), train and eval records in step order, the
    steps whose train record was the first after a start (warm-up, left out of the throughput mean), and the
    world size of the start record before each step's train record (absent where that start had none)."""

    label: str
    path: Path
    start: dict[str, Any]
    train: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    warmup_steps: set[int]
    world_sizes: dict[int, int]


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, in order; blank lines and a torn line (a crashed run) are skipped.

    Raises FileNotFoundError when ``path`` does not exist.
    """
    return [r for _, r in read_jsonl(path, skip_malformed=True) if isinstance(r, dict)]


def load_run(path: Path, label: str) -> Run:
    """Read the log at ``path`` into a Run labelled ``label``.

    Records without a kind count as train records (as in `foxacp.train.metrics.MetricsLogger`).
    Raises FileNotFoundError for a missing file and ValueError for a log without train records.
    """
    start: dict[str, Any] = {}
    train: dict[int, tuple[dict[str, Any], bool, int | None]] = {}
    world = None
    evals: dict[int, dict[str, Any]] = {}
    first_after_start = True
    for r in read_records(path):
        kind = r.get("kind", "train")
        if kind == "start":
            start = start or r
            world = r.get("world_size")
            first_after_start = True
        elif kind == "train" and "step" in r:
            train[r["step"]] = (r, first_after_start, world)
            first_after_start = False
        elif kind == "eval" and "step" in r:
            evals[r["step"]] = r
    if not train:
        raise ValueError(f"{path}: no train records")
    steps = sorted(train)
    return Run(
        label=label,
        path=Path(path),
        start=start,
        train=[train[s][0] for s in steps],
        evals=[evals[s] for s in sorted(evals)],
        warmup_steps={s for s in steps if train[s][1]},
        world_sizes={s: train[s][2] for s in steps if train[s][2]},
    )


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _device_name(start: dict[str, Any]) -> str | None:
    """The GPU name from the start record's "peak" text ("NAME: 989 TFLOP/s bf16", "NAME not in table:
    ...", "cpu: no peak ..."), else its torch device string."""
    peak = start.get("peak") or ""
    name = peak.split(":")[0].split(" not in table")[0].strip()
    if name and name != "config peak_tflops":
        return name
    return start.get("device")


def summarize(run: Run) -> dict[str, Any]:
    """The numbers of one run (see the module docstring); None where the log lacks the field."""
    start, last = run.start, run.train[-1]
    train_cfg = start.get("train_config") or {}
    timed = [r for r in run.train if r["step"] not in run.warmup_steps and "tokens_per_s" in r]
    mean_tps = _mean([r["tokens_per_s"] for r in timed])
    per_gpu = None
    if timed and all(r["step"] in run.world_sizes for r in timed):
        per_gpu = _mean([r["tokens_per_s"] / run.world_sizes[r["step"]] for r in timed])
    worlds = sorted(set(run.world_sizes.values()))
    world = worlds[0] if len(worlds) == 1 else ("/".join(map(str, worlds)) if worlds else start.get("world_size"))
    on_gpu = not str(start.get("device", "")).startswith("cpu")
    last_eval = run.evals[-1] if run.evals else {}
    savings = [r["acp_saving"] for r in run.train if r.get("acp_saving") is not None]
    when = start.get("time")
    return {
        "label": run.label,
        "log": run.path.name,
        "device": _device_name(start),
        "world_size": world,
        "n_params": start.get("n_params"),
        "seq_len": train_cfg.get("seq_len"),
        "global_batch_tokens": train_cfg.get("global_batch_tokens"),
        "acp": (start.get("model_config") or {}).get("acp"),
        "started": datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if when is not None
        else None,
        "final_step": last["step"],
        "final_tokens": last.get("tokens"),
        "final_train_loss": last.get("loss"),
        "final_eval_loss": last_eval.get("loss"),
        "final_eval_step": last_eval.get("step"),
        "mean_tokens_per_s": mean_tps,
        "tokens_per_s_records": len(timed),
        "tokens_per_s_per_gpu": per_gpu if on_gpu else None,
        "mean_acp_saving": _mean(savings),
        "final_acp_layer": last.get("acp_layer"),
        "eval_position_loss": last_eval.get("position_loss"),
        "eval_bucket_size": last_eval.get("bucket_size"),
        "train": [
            {k: r.get(k) for k in ("step", "tokens", "loss", "tokens_per_s", "acp_saving")}
            | {"warmup": r["step"] in run.warmup_steps}
            for r in run.train
        ],
    }


def _diff(a: float | None, b: float | None) -> float | None:
    return abs(a - b) if a is not None and b is not None else None


def loss_by_step(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Rows {"step", "losses": [one per run, None where that run has no record], "abs_diff": |run 0 - run
    1| or None} over the union of logged steps."""
    by_run = [{r["step"]: r.get("loss") for r in run.train} for run in runs]
    steps = sorted(set().union(*by_run))
    rows = []
    for step in steps:
        losses = [losses.get(step) for losses in by_run]
        rows.append({"step": step, "losses": losses, "abs_diff": _diff(*losses[:2]) if len(runs) > 1 else None})
    return rows


def compare(first: dict[str, Any], second: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Differences between the summaries of the first two runs: largest |train loss difference| over
    shared steps, final eval loss difference, largest difference in eval loss by position, and the ratio
    of mean tokens/s (second / first)."""
    diffs = [r["abs_diff"] for r in rows if r["abs_diff"] is not None]
    pa, pb = first["eval_position_loss"], second["eval_position_loss"]
    pos = (
        [abs(a - b) for a, b in zip(pa, pb, strict=True) if a is not None and b is not None]
        if pa and pb and len(pa) == len(pb)
        else []
    )
    ta, tb = first["mean_tokens_per_s"], second["mean_tokens_per_s"]
    return {
        "runs": [first["label"], second["label"]],
        "max_abs_train_loss_diff": max_abs(diffs) if diffs else None,
        "final_train_loss_diff": _diff(first["final_train_loss"], second["final_train_loss"]),
        "final_eval_loss_diff": _diff(first["final_eval_loss"], second["final_eval_loss"]),
        "max_abs_position_loss_diff": max_abs(pos) if pos else None,
        "tokens_per_s_ratio": tb / ta if ta and tb is not None else None,
    }


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _cell(text: Any) -> str:
    return str(text).replace("|", "/")


def markdown(payload: dict[str, Any]) -> str:
    """The Markdown report of a payload built by `report`: header, one summary row per run, the
    comparison of the first two runs, and the train loss by step."""
    runs, meta = payload["runs"], payload["meta"]
    lines = [f"# {payload['title']}", ""]
    if payload["note"]:
        lines += [payload["note"], ""]
    lines += [f"- {_cell(s['label'])}: `{s['log']}`, started {s['started'] or '-'}" for s in runs]
    lines += [f"- report: {meta['date']}, `python -m foxacp.bench.training`, commit {meta['commit']}", ""]

    per_gpu = any(s["tokens_per_s_per_gpu"] is not None for s in runs)
    head = "| run | device | world size | steps | final train loss | final eval loss | tokens/s (all GPUs) |"
    rule = "|---|---|---|---|---|---|---|"
    if per_gpu:
        head, rule = head + " tokens/s per GPU |", rule + "---|"
    lines += [head + " mean ACP saving |", rule + "---|"]
    for s in runs:
        world = "-" if s["world_size"] is None else s["world_size"]  # "1/4": resumed on another number of GPUs
        row = (
            f"| {_cell(s['label'])} | {_cell(s['device'] or '-')} | {_cell(world)} "
            f"| {s['final_step']} | {_fmt(s['final_train_loss'], '.4f')} | {_fmt(s['final_eval_loss'], '.4f')} "
            f"| {_fmt(s['mean_tokens_per_s'], ',.0f')} |"
        )
        if per_gpu:
            row += f" {_fmt(s['tokens_per_s_per_gpu'], ',.0f')} |"
        lines.append(row + f" {_fmt(s['mean_acp_saving'], '.1%')} |")
    lines += [
        "",
        "Final train loss: mean over the last logging window. Final eval loss: the last evaluation (step "
        + " / ".join(_fmt(s["final_eval_step"], "d") for s in runs)
        + "). tokens/s: mean over the logged windows after the first one (warm-up and compilation). "
        "ACP saving: fraction of causal attention tiles skipped, mean over the logged windows.",
    ]

    c = payload["comparison"]
    if c:
        a, b = (_cell(x) for x in c["runs"])
        lines += [
            "",
            f"{a} vs {b}: largest |train loss difference| {_fmt(c['max_abs_train_loss_diff'], '.2e')}, "
            f"final eval loss difference {_fmt(c['final_eval_loss_diff'], '.2e')}, largest difference in eval "
            f"loss by position {_fmt(c['max_abs_position_loss_diff'], '.2e')}; tokens/s of {b} / {a} = "
            f"{_fmt(c['tokens_per_s_ratio'], '.3f')}.",
        ]

    labels = [_cell(s["label"]) for s in runs]
    diff_head = f" \\|{labels[0]} - {labels[1]}\\| |" if c else ""
    lines += [
        "",
        "## Train loss by step",
        "",
        "| step | " + " | ".join(labels) + " |" + diff_head,
        "|---|" + "---|" * len(labels) + ("---|" if c else ""),
    ]
    for r in payload["loss_by_step"]:
        cells = " | ".join(_fmt(x, ".4f") for x in r["losses"])
        diff = f" {_fmt(r['abs_diff'], '.2e')} |" if c else ""
        lines.append(f"| {r['step']} | {cells} |{diff}")
    return "\n".join(lines) + "\n"


def plot(runs: Sequence[Run], summaries: Sequence[dict[str, Any]], path: Path, title: str, note: str) -> Path:
    """Write the four-panel PNG (see the module docstring) to ``path`` and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ((ax_loss, ax_pos), (ax_tps, ax_acp)) = plt.subplots(2, 2, figsize=(14, 9.5))
    width = 0.8 / len(runs)
    for i, (run, s) in enumerate(zip(runs, summaries, strict=True)):
        marker, line = STYLES[i % len(STYLES)]
        color = f"C{i}"
        steps = [r["step"] for r in run.train]
        ax_loss.plot(
            steps,
            [r.get("loss", math.nan) for r in run.train],
            marker=marker,
            ls=line,
            color=color,
            ms=4,
            label=run.label,
        )

        if s["eval_position_loss"]:
            label = f"{run.label} (step {s['final_eval_step']})"
            plot_position_loss(
                ax_pos, s["eval_position_loss"], s["eval_bucket_size"] or 1, ls=line, color=color, label=label
            )

        timed = [r for r in run.train if "tokens_per_s" in r]
        ax_tps.plot(
            [r["step"] for r in timed], [r["tokens_per_s"] / 1e3 for r in timed], ls=line, color=color, label=run.label
        )
        kept = [r for r in timed if r["step"] not in run.warmup_steps]
        warm = [r for r in timed if r["step"] in run.warmup_steps]
        ax_tps.plot([r["step"] for r in kept], [r["tokens_per_s"] / 1e3 for r in kept], marker, color=color, ms=4)
        ax_tps.plot(
            [r["step"] for r in warm], [r["tokens_per_s"] / 1e3 for r in warm], marker, color=color, mfc="none", ms=6
        )
        if s["mean_tokens_per_s"] is not None:
            ax_tps.axhline(s["mean_tokens_per_s"] / 1e3, color=color, lw=0.8, alpha=0.6)

        layers = s["final_acp_layer"]
        if layers:
            xs = [j - 0.4 + (i + 0.5) * width for j in range(len(layers))]
            bars = ax_acp.bar(
                xs,
                [100 * v for v in layers],
                width=width,
                color=color,
                label=f"{run.label} (mean {_fmt(s['mean_acp_saving'], '.1%')})",
            )
            values = [f"{100 * v:.1f}" if v else "" for v in layers]
            ax_acp.bar_label(bars, values, label_type="center", rotation=90, color="white", fontsize=7)

    ax_loss.set(xlabel="step", ylabel="train loss (nats/token)", title="train loss")
    ax_pos.set(xlabel="token position", ylabel="eval loss (nats/token)", title="eval loss by position (last eval)")
    ax_tps.set(
        xlabel="step", ylabel="thousand tokens/s (all GPUs)", title="throughput (hollow: warm-up, left out; line: mean)"
    )
    ax_acp.set(
        xlabel="layer",
        ylabel="causal attention tiles skipped (%)",
        title=f"ACP FLOP saving per layer (step {runs[0].train[-1]['step']})",
        ylim=(0, 118),
        yticks=range(0, 101, 20),
    )
    for ax, empty in ((ax_pos, "no eval records"), (ax_acp, "no ACP stats")):
        if not ax.has_data():
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="0.4")
    n_layers = max((len(s["final_acp_layer"] or []) for s in summaries), default=0)
    if n_layers:
        ax_acp.set_xticks(range(n_layers))
    ax_tps.set_ylim(bottom=0)
    for ax in (ax_loss, ax_pos, ax_tps, ax_acp):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            loc = {ax_tps: "lower right", ax_acp: "upper center"}.get(ax, "best")
            ax.legend(fontsize=8, loc=loc, ncol=len(runs) if ax is ax_acp else 1)

    fig.suptitle(title, fontsize=13)
    if note:
        fig.text(0.5, 0.01, "\n".join(textwrap.wrap(note, 150)), ha="center", va="bottom", fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.035 if note else 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(
    logs: Sequence[Path],
    labels: Sequence[str] | None,
    results_dir: Path,
    stem: str,
    *,
    title: str | None = None,
    note: str = "",
) -> list[Path]:
    """Write ``stem``.png, ``stem``.md and ``stem``.json under ``results_dir`` for the training logs
    ``logs`` (labels default to the file names) and return their paths.

    Raises ValueError when the labels do not match the logs in number or a log has no train records,
    FileNotFoundError for a missing log.
    """
    if not logs:
        raise ValueError("no logs given")
    labels = list(labels) if labels else [Path(p).stem for p in logs]
    if len(labels) != len(logs):
        raise ValueError(f"{len(labels)} labels for {len(logs)} logs")
    runs = [load_run(Path(p), label) for p, label in zip(logs, labels, strict=True)]
    summaries = [summarize(run) for run in runs]
    rows = loss_by_step(runs)
    payload = {
        "title": title or stem,
        "note": note,
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": git_commit(Path(__file__).resolve().parent),
        },
        "runs": summaries,
        "comparison": compare(summaries[0], summaries[1], rows) if len(runs) > 1 else None,
        "loss_by_step": rows,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    png = plot(runs, summaries, results_dir / f"{stem}.png", payload["title"], note)
    md = results_dir / f"{stem}.md"
    md.write_text(markdown(payload))
    js = results_dir / f"{stem}.json"
    js.write_text(json.dumps(payload, indent=1) + "\n")
    return [png, md, js]


def set_dir(logs: Sequence[Path], what: str, root: Path) -> Path:
    """The result set folder for a report on ``logs``: the first log's start date and the commit it trained with
    (logs from before the start record held one: today and this tree's commit), ``training-<what>`` and its device
    (with its world size). Raises what ``load_run`` and ``result_dir`` raise."""
    start = load_run(Path(logs[0]), "first").start
    device = device_tag(_device_name(start) or "unknown", int(start.get("world_size") or 1))
    when = datetime.datetime.fromtimestamp(start["time"], datetime.timezone.utc) if "time" in start else None
    date = (when or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%d")
    commit = start.get("commit") or git_commit(Path(__file__).resolve().parent)
    return result_dir(f"training-{what}", date=date, commit=commit, device=device, root=root)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m foxacp.bench.training",
        description="Plot and tabulate foxacp training logs (JSONL) side by side.",
    )
    p.add_argument("logs", nargs="+", type=Path, help="JSONL logs written by foxacp train (log.jsonl)")
    p.add_argument("--labels", nargs="+", help="one label per log (default: the file names)")
    p.add_argument("--title", help="figure and report title (default: the stem)")
    p.add_argument("--stem", required=True, help="what the runs compare, e.g. 125m-16k-acp-vs-exact")
    p.add_argument("--results-dir", type=Path, default=RESULTS_ROOT, help="root of the result set folders")
    p.add_argument("--note", default="", help="free text for the report: device, commit, settings")
    args = p.parse_args(argv)
    if args.labels and len(args.labels) != len(args.logs):
        p.error(f"{len(args.labels)} labels for {len(args.logs)} logs")
    try:
        out_dir = set_dir(args.logs, args.stem, args.results_dir)
        paths = report(args.logs, args.labels, out_dir, "training", title=args.title or args.stem, note=args.note)
    except (OSError, ValueError) as e:
        p.error(str(e))
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
