"""The results index, generated from the result sets under results/ (never edited by hand).

    python -m foxacp.bench.index            # rewrite results/README.md
    python -m foxacp.bench.index --check    # exit 1 when results/README.md is not what the sets give

Each folder ``<date>-<commit>-<what>-<device>`` (see ``foxacp.bench.results``) is one set. Its benchmark is
``what``; the files inside add the timestamp and a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .results import RESULTS_ROOT, SET_NAME

# The commit that removed the superseded sets of the old bench/results/ folder (git keeps them there).
REMOVED_AT = "a54146a"

RULE = (
    "A set's benchmark is its folder name without date, commit and device. The current set of each "
    "(benchmark, device) is the newest full run: partial or differently configured runs carry a tag in their "
    "benchmark name (`attention-quick`, `attention-warmup25ms`), so they never stand in for a full run. "
    "Superseded sets leave the tree; git keeps them."
)


@dataclass
class ResultSet:
    """One result folder: the facts of its name, its run timestamp (from its JSON, else the folder's date),
    a one-line summary and its files."""

    path: Path
    date: str
    commit: str
    benchmark: str
    device: str
    timestamp: str
    summary: str
    files: list[str]
    current: bool = False


def _summary(payload: object, evals: bool = False) -> tuple[str | None, str]:
    """(timestamp or None, summary) from a result JSON of any of the benchmarks; a `foxacp eval` record only
    with ``evals`` (a set that holds other records too, a study, is summarised by those)."""
    if isinstance(payload, list):  # correctness: a list of cases
        return None, f"{len(payload)} cases against float64"
    if not isinstance(payload, dict):
        return None, ""
    meta = payload.get("meta") or {}
    rows = payload.get("rows") or []
    if rows and "seqlen" in rows[0]:  # attention
        configs = sorted({(r["heads"], r["head_dim"]) for r in rows}, key=lambda c: (c[1], c[0]))
        contexts = sorted({r["seqlen"] for r in rows})
        text = (
            f"{meta.get('device', '?')}, " + ", ".join(f"{h}x{d}" for h, d in configs) + f"; T {contexts[0]}-"
            f"{contexts[-1]}; {(meta.get('settings') or {}).get('do_bench', '')}"
        )
        return meta.get("date"), text
    if rows and "heads_q" in rows[0]:  # decode attention
        configs = sorted({(r["heads_q"], r["heads_kv"], r["head_dim"]) for r in rows}, key=lambda c: (c[2], c[0]))
        contexts = sorted({r["context"] for r in rows})
        batches = sorted({r["batch"] for r in rows})
        text = (
            f"{meta.get('device', '?')}, one decoding step: "
            + ", ".join(f"{h}/{kv}x{d}" for h, kv, d in configs)
            + f"; T {contexts[0]}-{contexts[-1]}; B {', '.join(map(str, batches))}"
        )
        return meta.get("date"), text
    if rows and "tokens_per_s" in rows[0] and "regime" in rows[0]:  # training throughput
        presets = list(dict.fromkeys(r["preset"] for r in rows))  # in the table's order
        contexts = sorted({r["context"] for r in rows})
        regimes = sorted({r["regime"] for r in rows})
        text = f"{meta.get('device', '?')}, {', '.join(presets)}; T {contexts[0]}-{contexts[-1]}; gates "
        return meta.get("date"), text + f"{', '.join(regimes)}: {len(rows)} rows"
    if rows:  # decode end to end
        return meta.get("date"), f"{meta.get('device', '?')}, {meta.get('preset', '')}: {len(rows)} rows"
    if "memory" in payload and "batch" in payload:  # KV eviction
        return meta.get("date"), f"{meta.get('device', '?')}, {meta.get('preset', '')}, gates {meta.get('gates', '?')}"
    if "held_out_loss" in payload:  # ACP quality study
        return meta.get("date"), f"{meta.get('device', '?')}: a model trained with ACP and exactly, evaluated both ways"
    if evals and "passkey" in payload and "per_position" in payload:  # foxacp eval
        text = f"{meta.get('device', '?')}: foxacp eval, passkey {100 * payload['passkey']['overall']:.0f}%"
        for name in ("exact", "evict"):
            if name in payload:
                text += f", {name} {100 * payload[name]['passkey']['overall']:.0f}%"
        return meta.get("date"), text
    if "cases" in payload:  # correctness with meta
        return meta.get("date"), f"{meta.get('device', '?')}: {len(payload['cases'])} cases against float64"
    # training: dated by the runs themselves (meta's date is when the report was written, perhaps much later)
    started = sorted(r["started"] for r in payload.get("runs", []) if isinstance(r, dict) and r.get("started"))
    return (started[0] if started else meta.get("date")), str(payload.get("title", ""))


def _first_summary(payloads: Sequence[object]) -> tuple[str | None, str]:
    """The summary of the first record that gives one, eval records after all others."""
    for evals in (False, True):
        for payload in payloads:
            timestamp, summary = _summary(payload, evals)
            if summary:
                return timestamp, summary
    return None, ""


def read_set(folder: Path) -> ResultSet:
    """Read one set folder. Raises ValueError when its name does not follow ``foxacp.bench.results``."""
    m = SET_NAME.fullmatch(folder.name)
    if m is None:
        raise ValueError(f"{folder}: not a result set name (<YYYY-MM-DD>-<commit7>-<what>-<device>)")
    timestamp, summary = _first_summary([json.loads(js.read_text()) for js in sorted(folder.glob("*.json"))])
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    return ResultSet(folder, m["date"], m["commit"], m["what"], m["device"], timestamp or m["date"], summary, files)


def collect(root: Path) -> list[ResultSet]:
    """Every set under ``root``, newest first, with the current set of each (benchmark, device) marked."""
    sets = [read_set(p) for p in root.iterdir() if p.is_dir()]
    sets.sort(key=lambda s: (s.timestamp, s.commit), reverse=True)
    seen = set()
    for s in sets:
        s.current = (s.benchmark, s.device) not in seen
        seen.add((s.benchmark, s.device))
    return sets


def render(sets: Sequence[ResultSet]) -> str:
    """The Markdown index of ``sets``."""
    lines = [
        "# Results index",
        "",
        "Generated by `python -m foxacp.bench.index` from the result folders; do not edit by hand.",
        "",
        RULE + f" The sets of the old bench/results/ folder that no longer stand were removed at {REMOVED_AT}: "
        f"`git show {REMOVED_AT}^:bench/results/README.md` is their hand-written index.",
        "",
        "| set | benchmark | device | date | commit | current | what | files |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sets:
        files = ", ".join(f"[{f}]({s.path.name}/{f})" for f in s.files)
        current = "**current**" if s.current else "superseded"
        lines.append(
            f"| {s.path.name} | {s.benchmark} | {s.device} | {s.timestamp} | {s.commit} | {current} "
            f"| {s.summary.replace('|', '/')} | {files} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m foxacp.bench.index", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=RESULTS_ROOT, help="folder holding the result sets")
    p.add_argument("--check", action="store_true", help="exit 1 if README.md differs from the generated index")
    args = p.parse_args(argv)
    text = render(collect(args.root))
    index = args.root / "README.md"
    if args.check:
        if not index.exists() or index.read_text() != text:
            print(f"{index} is out of date: run python -m foxacp.bench.index", file=sys.stderr)
            return 1
        return 0
    index.write_text(text)
    print(index)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
