"""Why does an ACP training step spend more time outside the attention kernels than an exact one?

    PYTHONPATH=src python experiments/050-acp-step-overhead/probe.py --preset 360M --context 4096 [--out DIR]

Runs the throughput benchmark's measurement (exact and ACP on one model, interleaved) with dynamo's counters
reset, then profiles one step of each mode and prints, per mode: graph breaks, recompiles and graphs compiled,
the step's device time split into attention kernels and the rest, and the 15 largest non-attention kernels.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
from torch._dynamo.utils import counters
from torch.profiler import ProfilerActivity, profile

from foxacp.bench import throughput
from foxacp.bench.throughput import ATTENTION_KERNELS, Config


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="360M")
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--out", type=Path, default=Path("."))
    a = p.parse_args()
    args = throughput.parse_args(["--presets", a.preset, "--contexts", str(a.context), "--rounds", "2"])
    counters.clear()
    cs = [Config(a.preset, a.context, m, "init") for m in ("exact", "acp")]
    recs = throughput.measure(cs, args, None)
    report = {
        "rows": [{k: r.get(k) for k in ("key", "step_ms", "step_ms_all", "attention_ms")} for r in recs],
        "graph_breaks": {str(k)[:160]: v for k, v in counters["graph_break"].items()},
        "recompiles": {str(k)[:160]: v for k, v in counters["recompiles"].items()},
        "stats": dict(counters["stats"]),
    }
    # One more step per mode under the profiler, through the benchmark's own step (a small wrapper of measure).
    kernels = {}
    for c in cs:
        per: dict[str, float] = defaultdict(float)
        orig = throughput._attention_ms

        def spy(step, per=per):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                step()
                torch.cuda.synchronize()
            for e in prof.key_averages():
                per[e.key[:100]] += getattr(e, "device_time_total", 0.0) / 1e3
            return orig(step)

        throughput._attention_ms = spy
        args1 = throughput.parse_args(["--presets", a.preset, "--contexts", str(a.context), "--rounds", "1"])
        throughput.measure([c], args1, None)
        throughput._attention_ms = orig
        attn = sum(v for k, v in per.items() if k in ATTENTION_KERNELS)
        rest = sorted(((v, k) for k, v in per.items() if k not in ATTENTION_KERNELS), reverse=True)
        kernels[c.mode] = {"attention_ms": attn, "other_ms": sum(v for v, _ in rest), "top": rest[:15]}
    report["kernels"] = kernels
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"probe-{a.preset}-{a.context}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("rows", "stats")}, indent=1))
    print("graph breaks:", sum(report["graph_breaks"].values()), "recompiles:", sum(report["recompiles"].values()))
    for mode, k in kernels.items():
        print(f"{mode}: attention {k['attention_ms']:.1f} ms, other kernels {k['other_ms']:.1f} ms")
        for v, name in k["top"][:8]:
            print(f"   {v:8.2f} ms  {name}")


if __name__ == "__main__":
    main()
