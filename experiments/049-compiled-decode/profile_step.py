"""Kernels of one compiled decode step (760M, B=1, bf16 after a 4k prompt): which kernels, how long each.

    PYTHONPATH=src python experiments/049-compiled-decode/profile_step.py [--preset 760M --context 4096]

Profiles the compiled step outside a CUDA graph (inside one the profiler sees one launch) and prints the
kernels of one step grouped by name, their GPU time, and the step's wall time inside a graph for scale.
"""

from __future__ import annotations

import argparse
import functools
from collections import defaultdict

import torch
import torch._inductor.config
from torch.profiler import ProfilerActivity, profile

from foxacp.bench.decode import build_model
from foxacp.infer.generate import decode_one_token
from foxacp.infer.graph import CUDAGraphStep, compiled_block_step
from foxacp.ops import set_value_checks


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="760M")
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--inductor", nargs="*", default=[], help="torch._inductor.config settings, e.g. combo_kernels=1")
    a = p.parse_args()
    for setting in a.inductor:  # experiment 063: Inductor's settings, e.g. triton.enable_pdl=1, one process each
        key, value = setting.split("=")
        current = functools.reduce(getattr, key.split("."), torch._inductor.config)
        torch._inductor.config.patch({key: type(current)(int(value))}).__enter__()
    set_value_checks(False)
    model = build_model(a.preset, torch.bfloat16, torch.device("cuda"))
    cache = model.new_cache(a.batch, a.context + 64)
    with torch.no_grad(), model.fused_projections():
        ids = torch.randint(0, model.config.vocab_size, (a.batch, a.context), device="cuda")
        model(ids, cache=cache)
        tok = ids[:, -1]
        step = functools.partial(
            decode_one_token, model, cache, sampler=lambda x: x.argmax(-1), run_block=compiled_block_step()
        )
        for _ in range(3):
            step(tok)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step(tok)
            torch.cuda.synchronize()
        graph = CUDAGraphStep(step, cache, tok, None)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(5):
            graph(tok)
        start.record()
        for _ in range(20):
            graph(tok)
        end.record()
        torch.cuda.synchronize()
    per = defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            per[e.name[:90]][0] += e.device_time_total / 5
            per[e.name[:90]][1] += 1
    total = sum(v[0] for v in per.values())
    n = sum(v[1] for v in per.values()) / 5
    print(
        f"\n{a.preset} B={a.batch} context {a.context} {' '.join(a.inductor)}: graph step {start.elapsed_time(end) / 20 * 1e3:.0f} us; "
        f"{n:.0f} kernels per step, {total:.0f} us of kernel time"
    )
    for name, (us, cnt) in sorted(per.items(), key=lambda x: -x[1][0])[:25]:
        print(f"  {us:8.1f} us  x{cnt / 5:5.0f}  {name}")


if __name__ == "__main__":
    main()
