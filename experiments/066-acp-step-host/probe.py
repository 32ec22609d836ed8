"""Where a compiled training step's wall time goes when the GPU is not busy: exact against ACP, one process.

    PYTHONPATH=src python experiments/066-acp-step-host/probe.py --preset 360M --seq-len 4096 --micro-batch 4

Builds the model as experiment 046 does (blocks compiled, fused AdamW, the chunked loss), times --steps steps
(synchronised after each), then profiles two steps with host and device activities. Per mode it prints the wall
time of a step, the time some kernel is running (the union of kernel intervals), the idle rest, the host-device
synchronisations per step, the longest idle gaps with the kernel that ended each, and the host ops with the most
self time. Results in --out as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from foxacp.bench.decode import use_config
from foxacp.eval.loss import token_losses
from foxacp.model import FoxLM, ModelConfig
from foxacp.ops import set_value_checks

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def busy_and_gaps(intervals: list[tuple[float, float, str]], top: int = 8) -> tuple[float, list[tuple[float, str]]]:
    """Union length of (start, end, name) intervals, and the longest gaps between them as (length, name of the
    interval that ended before the gap)."""
    busy, gaps, end, last = 0.0, [], None, ""
    for s, e, name in sorted(intervals):
        if end is None or s > end:
            if end is not None:
                gaps.append((s - end, last))
            busy += e - s
            end, last = e, name
        elif e > end:
            busy += e - end
            end, last = e, name
    return busy, sorted(gaps, reverse=True)[:top]


def run_mode(model: FoxLM, cfg: ModelConfig, batch: dict, opt, steps: int) -> dict:
    use_config(model, cfg)  # one object per mode, made once: the compiled blocks keep one graph per mode
    acp = cfg.acp

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = token_losses(model, batch).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    set_value_checks(False)
    for _ in range(3):
        step()
    wall = []
    for _ in range(steps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        torch.cuda.synchronize()
        wall.append(1e3 * (time.perf_counter() - t))
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        window = 1e3 * (time.perf_counter() - t) / 2
    events = prof.events()
    kernels = [
        (e.time_range.start, e.time_range.end, e.name[:80])
        for e in events
        if e.device_type == torch.autograd.DeviceType.CUDA
    ]
    busy, gaps = busy_and_gaps(kernels)
    syncs = Counter(e.name for e in events if e.name in SYNC_CALLS)
    host = Counter()
    for e in events:
        if e.device_type == torch.autograd.DeviceType.CPU:
            host[e.name[:80]] += e.self_cpu_time_total
    return {
        "acp": acp,
        "wall_ms": sorted(wall)[len(wall) // 2],
        "wall_min_max_ms": [min(wall), max(wall)],
        "profiled_ms_per_step": window,
        "kernel_busy_ms_per_step": busy / 2e3,
        "kernels_per_step": len(kernels) / 2,
        "syncs_per_step": {k: v / 2 for k, v in syncs.items()},
        "longest_gaps_us": [(round(g, 1), name) for g, name in gaps],
        "host_self_ms_per_step": [(name, round(us / 2e3, 2)) for name, us in host.most_common(15)],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="360M")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--steps", type=int, default=9)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    with torch.device("cuda"):
        model = FoxLM(ModelConfig.from_preset(a.preset, vocab_size=a.vocab))
    for block in model.blocks:
        block.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, a.vocab, (a.micro_batch, a.seq_len), device="cuda")
    batch = {"input_ids": ids, "labels": torch.roll(ids, -1, 1)}
    cfgs = [dataclasses.replace(model.config, acp=acp) for acp in (False, True)]
    rows = [run_mode(model, cfg, batch, opt, a.steps) for cfg in cfgs + cfgs]
    print(f"\n{a.preset} T={a.seq_len} B={a.micro_batch}, {torch.cuda.get_device_name()}")
    print("| mode | wall ms (min-max) | profiled ms | kernel-busy ms | idle ms | kernels | syncs |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["wall_min_max_ms"]
        idle = r["profiled_ms_per_step"] - r["kernel_busy_ms_per_step"]
        print(
            f"| {'acp' if r['acp'] else 'exact'} | {r['wall_ms']:.1f} ({lo:.0f}-{hi:.0f}) | {r['profiled_ms_per_step']:.1f} "
            f"| {r['kernel_busy_ms_per_step']:.1f} | {idle:.1f} | {r['kernels_per_step']:.0f} "
            f"| {sum(r['syncs_per_step'].values()):.0f} |"
        )
    for r in rows[2:]:
        print(f"\n{'acp' if r['acp'] else 'exact'}: longest idle gaps (us, after kernel): {r['longest_gaps_us']}")
        print(f"  host self time (ms/step): {r['host_self_ms_per_step'][:10]}")
        print(f"  syncs: {r['syncs_per_step']}")
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        name = f"probe-{a.preset}-{a.seq_len}.json"
        (a.out / name).write_text(json.dumps({"args": vars(a) | {"out": str(a.out)}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
