"""Experiment 053's result set from its eval folder: eval.json, the plots, the training log and a README with the
tables (accuracy per length with ACP, exactly and evicting; answers that agree; what the evicting cache held).

    python experiments/053-passkey-evict-cpu/report.py runs/053 [--root results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
from pathlib import Path
from typing import Any

from foxacp.bench.results import RESULTS_ROOT, result_dir


def by_length(grid: dict[str, Any]) -> dict[int, float]:
    """Accuracy per prompt length over all depths."""
    out: dict[int, list[bool]] = {}
    for t in grid["trials"]:
        out.setdefault(t["length"], []).append(t["correct"])
    return {n: sum(v) / len(v) for n, v in sorted(out.items())}


def agreement(a: dict[str, Any], b: dict[str, Any]) -> dict[int, float]:
    """Share of prompts per length where the two runs gave the same answer text."""
    out: dict[int, list[bool]] = {}
    for x, y in zip(a["trials"], b["trials"], strict=True):
        out.setdefault(x["length"], []).append(x["answer"] == y["answer"])
    return {n: sum(v) / len(v) for n, v in sorted(out.items())}


def held_by_length(memory: dict[str, Any]) -> dict[int, float]:
    """Mean share of a full cache held at the end, per length (batches of one length only)."""
    out: dict[int, list[float]] = {}
    for b in memory["batches"]:
        if len(b["lengths"]) == 1:
            out.setdefault(b["lengths"][0], []).append(b["fraction_held"])
    return {n: sum(v) / len(v) for n, v in sorted(out.items())}


def readme(rec: dict[str, Any], steps: int) -> str:
    m = rec["meta"]
    acp, exact, evict = rec["passkey"], rec["exact"]["passkey"], rec["evict"]["passkey"]
    rows = {
        "accuracy, ACP": by_length(acp),
        "accuracy, exact": by_length(exact),
        "accuracy, evicting": by_length(evict),
        "same answer, exact vs ACP": agreement(acp, exact),
        "same answer, evicting vs ACP": agreement(acp, evict),
        "evicting cache: share of a full cache held": held_by_length(evict["memory"]),
    }
    lengths = sorted(by_length(acp))
    lines = [
        "# Passkey with ACP, exactly and with the evicting cache: a small model trained on a CPU (experiment 053)",
        "",
        f"Model {m['model']} ({steps} training steps, context {m['training_context']}, {m['variant']}, "
        f"log eps {m['log_eps']}); held-out data {m['data']}; commit {m['commit']}; device {m['device']}, "
        f"{m['dtype']}. {len(acp['trials'])} prompts: lengths {lengths}, depths {acp['depths']}, "
        f"{acp['trials_per_cell']} keys of {acp['digits']} digits per cell (lengths never trained).",
        "",
        "| | " + " | ".join(str(n) for n in lengths) + " |",
        "|---|" + "---|" * len(lengths),
    ]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[n]:.2f}" if n in values else "-" for n in lengths) + " |")
    cmp = rec["comparison"]
    lines += [
        "",
        f"Overall: ACP {acp['overall']:.3f}, exact {exact['overall']:.3f}, evicting {evict['overall']:.3f}; "
        f"the same answer exactly in {cmp['passkey_same_answer']:.3f} and evicting in "
        f"{rec['evict_comparison']['passkey_same_answer']:.3f} of the prompts. Held-out loss by position (up to "
        f"{rec['per_position']['max_len']} tokens): ACP {rec['per_position']['loss']:.4f}, exact "
        f"{rec['exact']['per_position']['loss']:.4f}, largest difference at any position "
        f"{cmp['max_abs_loss_difference']:.2e}.",
        "",
        *(f"![{p}]({p})" for p in ("passkey.png", "passkey_exact.png", "passkey_evict.png", "loss_difference.png")),
        "",
    ]
    return "\n".join(lines)


def make(run: Path, root: Path) -> Path:
    """Write the set for the run folder ``run`` (train/ and eval/ of run.sh) under ``root``; returns it."""
    rec = json.loads((run / "eval" / "eval.json").read_text())
    log = run / "train" / "log.jsonl"
    steps = max(json.loads(line)["step"] for line in log.read_text().splitlines() if '"train"' in line)
    commit = rec["meta"]["commit"]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = result_dir("passkey-evict", date=date, commit=commit, device="cpu", root=root)
    out.mkdir(parents=True, exist_ok=True)
    for f in (run / "eval").iterdir():
        if f.suffix in (".json", ".png"):
            shutil.copy(f, out / f.name)
    shutil.copy(log, out / "train_log.jsonl")
    (out / "README.md").write_text(readme(rec, steps))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="the RUN folder of run.sh (train/ and eval/)")
    p.add_argument("--root", type=Path, default=RESULTS_ROOT)
    args = p.parse_args(argv)
    print(make(args.run, args.root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
