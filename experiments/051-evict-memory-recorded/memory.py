"""KV memory an evicting cache holds with the study model's recorded gates, per-layer mapping, on any device.

    PYTHONPATH=src python experiments/051-evict-memory-recorded/memory.py [--contexts 16384,65536] [--pools 1.0,0.35]

The memory half of ``foxacp.bench.evict`` (``memory_row``: fill two sequences' caches in chunks with eviction
between them, then count the blocks held): it is arithmetic on the gates, the static bound and the block size,
so it does not depend on the device. 760M shapes (24 layers, 24 heads of 64), random weights (QK-norm gains 1),
bf16, model layer l reading the file's layer l mod 8. Prints one row per context and writes memory.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from foxacp.bench.decode import build_model
from foxacp.bench.evict import memory_row, parse_args
from foxacp.bench.report import environment
from foxacp.ops import set_value_checks

HERE = Path(__file__).resolve().parent
GATES = HERE.parents[1] / "results/2026-12-04-20966ce-acp-quality-study-h200/gates-acp.safetensors"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--contexts", default="16384,65536")
    p.add_argument("--pools", default="1.0,0.35", help="pool per layer per context, as a share of the full cache")
    p.add_argument("--gates-layer", default=None, help="one file layer for every model layer (default: l mod 8)")
    a = p.parse_args()
    extra = [] if a.gates_layer is None else ["--gates-layer", a.gates_layer]
    args = parse_args(["--gates", str(GATES), "--out", str(HERE / "logs"), *extra])
    set_value_checks(False)
    model = build_model("760M", torch.bfloat16, torch.device("cpu"), "torch")
    rows = []
    with torch.no_grad():
        for context, pool in zip(a.contexts.split(","), a.pools.split(","), strict=True):
            t = time.perf_counter()
            row, cache = memory_row(model, args, int(context), pool_fraction=float(pool))
            del cache
            row["wall_s"] = time.perf_counter() - t
            rows.append(row)
            print(
                f"context {context} (pool {pool}): held {100 * row['held_fraction']:.1f}%, peak {100 * row['peak_fraction']:.1f}%,"
                f" per KV head {100 * row['head_fraction_min']:.0f}%..{100 * row['head_fraction_max']:.0f}%,"
                f" delta {row['delta']:.2f} ({row['wall_s']:.0f} s)",
                flush=True,
            )
    meta = environment(HERE.parents[1]) | {"preset": "760M", "dtype": "bfloat16", "gates": args.gates_label}
    suffix = "" if a.gates_layer is None else f"-layer{a.gates_layer}"
    (HERE / "logs").mkdir(exist_ok=True)
    (HERE / "logs" / f"memory{suffix}.json").write_text(json.dumps({"meta": meta, "memory": rows}, indent=1))


if __name__ == "__main__":
    main()
