"""A compiled decode step with each block's last residual add in the next block's graph (the default since 065)
against the same step with the add in its own block's graph (as before): kernels per step and time in a CUDA graph.

    PYTHONPATH=src python experiments/065-decode-block-boundary/compare.py [--preset 760M --context 16384 --batch 1]

Both units are compiled with the default's Inductor options; the modes (exact, ACP with the random model's own
gates) and units are timed in interleaved rounds of 100 graph replays, the median kept.
"""

from __future__ import annotations

import argparse
import functools
import statistics

import torch
from torch.profiler import ProfilerActivity, profile

from foxacp.bench.decode import build_model, set_acp
from foxacp.infer.generate import decode_one_token
from foxacp.infer.graph import CUDAGraphStep, compiled_block_step
from foxacp.ops import set_value_checks


def block_step_before(block, x, delta, pos, layer):
    """The unit before 065: the whole block in its graph, delta (zeros) passed through untouched."""
    return block(x, pos, cache=layer), delta


def kernels(step, tok) -> int:
    """Kernels of one step run outside a graph (inside one the profiler sees a single launch)."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step(tok)
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="760M")
    p.add_argument("--context", type=int, default=16384)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    set_value_checks(False)
    model = build_model(a.preset, torch.bfloat16, torch.device("cuda"))
    units = {
        "per-block add": torch.compile(block_step_before, dynamic=False, options={"combo_kernels": True}),
        "deferred add": compiled_block_step(),
    }
    graphs, counts = {}, {}
    with torch.no_grad(), model.fused_projections():
        ids = torch.randint(0, model.config.vocab_size, (a.batch, a.context), device="cuda")
        for mode in ("exact", "acp"):
            set_acp(model, mode == "acp")
            cache = model.new_cache(a.batch, a.context + 128)  # a round's 120 steps, undone after
            model(ids, cache=cache)
            tok = ids[:, -1]
            for name, unit in units.items():
                step = functools.partial(decode_one_token, model, cache, sampler=lambda x: x.argmax(-1), run_block=unit)
                saved = cache.snapshot()
                for _ in range(3):
                    step(tok)
                counts[mode, name] = kernels(step, tok)
                cache.restore(saved)
                graphs[mode, name] = (CUDAGraphStep(step, cache, tok, None), tok, cache, saved)
        times: dict = {key: [] for key in graphs}
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(a.rounds):
            for key, (graph, tok, cache, saved) in graphs.items():
                for _ in range(20):
                    graph(tok)
                start.record()
                for _ in range(100):
                    graph(tok)
                end.record()
                torch.cuda.synchronize()
                times[key].append(start.elapsed_time(end) / 100 * 1e3)
                cache.restore(saved)
    print(f"\n{a.preset} B={a.batch} after {a.context}, {torch.cuda.get_device_name()}")
    print("| mode | unit | kernels/step | us/step (median) | min-max |")
    print("|---|---|---|---|---|")
    for key, ts in times.items():
        print(f"| {key[0]} | {key[1]} | {counts[key]} | {statistics.median(ts):.0f} | {min(ts):.0f}-{max(ts):.0f} |")


if __name__ == "__main__":
    main()
