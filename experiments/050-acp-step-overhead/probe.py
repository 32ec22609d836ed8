"""Why does an ACP training step spend more time outside the attention kernels than an exact one?

    PYTHONPATH=src python experiments/050-acp-step-overhead/probe.py --preset 360M --context 4096 [--out DIR] [--traced]

Runs the throughput benchmark's measurement (exact and ACP on one model, interleaved) with dynamo's counters
reset, keeping every kernel of the step it profiles per mode, and prints: graph breaks, recompiles and graphs
compiled, and per mode the step's device time split into attention kernels and the rest, with the largest
non-attention kernels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from torch._dynamo.utils import counters

from foxacp.bench import throughput
from foxacp.bench.throughput import ATTENTION_KERNELS, Config
from foxacp.ops import attention as op_attention


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="360M")
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--traced", action="store_true", help="let Dynamo trace into the op (before experiment 054)")
    a = p.parse_args()
    op_attention.OPAQUE_WHEN_COMPILING = not a.traced
    args = throughput.parse_args(["--presets", a.preset, "--contexts", str(a.context), "--rounds", "2"])
    cs = [Config(a.preset, a.context, m, "init") for m in ("exact", "acp")]
    # measure() profiles one step of each mode, in the order of cs, through _attention_ms: the spy keeps every
    # kernel of that step and returns the attention kernels' time as the original does.
    kernels, modes = {}, iter(c.mode for c in cs)

    def spy(step) -> float:
        per = throughput.kernel_ms(step)
        attn = sum(v for k, v in per.items() if k in ATTENTION_KERNELS)
        rest = sorted(((v, k[:100]) for k, v in per.items() if k not in ATTENTION_KERNELS), reverse=True)
        kernels[next(modes)] = {"attention_ms": attn, "other_ms": sum(v for v, _ in rest), "top": rest[:15]}
        return attn

    counters.clear()
    original, throughput._attention_ms = throughput._attention_ms, spy
    try:
        recs = throughput.measure(cs, args, None)
    finally:
        throughput._attention_ms = original
    report = {
        "rows": [{k: r.get(k) for k in ("key", "step_ms", "step_ms_all", "attention_ms")} for r in recs],
        "graph_breaks": {str(k)[:160]: v for k, v in counters["graph_break"].items()},
        "recompiles": {str(k)[:160]: v for k, v in counters["recompiles"].items()},
        "stats": dict(counters["stats"]),
        "kernels": kernels,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    path = "traced" if a.traced else "opaque"
    report["op_under_compile"] = path
    (a.out / f"probe-{a.preset}-{a.context}-{path}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("rows", "stats")}, indent=1))
    print("graph breaks:", sum(report["graph_breaks"].values()), "recompiles:", sum(report["recompiles"].values()))
    for mode, k in kernels.items():
        print(f"{mode}: attention {k['attention_ms']:.1f} ms, other kernels {k['other_ms']:.1f} ms")
        for v, name in k["top"][:8]:
            print(f"   {v:8.2f} ms  {name}")


if __name__ == "__main__":
    main()
