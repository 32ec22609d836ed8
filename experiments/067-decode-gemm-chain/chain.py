"""The few-row GEMMs of a whole 760M decode step (24 layers x 4, B=1), back to back in one CUDA graph, with and
without small kernels between them: how fast do they stream the weights when nothing else runs?

    PYTHONPATH=src python experiments/067-decode-gemm-chain/chain.py [--preset 760M --rows 1]

Every layer has its own weights (1.2 GB at 760M, beyond L2), as in a real step. Variants, each one CUDA graph:
"gemms" (the 96 GEMMs alone), "glue N" (N one-block elementwise kernels after each GEMM: a decode step has ~2 a
GEMM). One layer's GEMMs are first checked against float64. Timed by CUDA events over graph replays, the
variants interleaved in rounds, the median kept; bytes read / time against the measured copy bandwidth.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
from pathlib import Path

import torch

from foxacp.bench.decode_attention import copy_bandwidth
from foxacp.model.config import MODEL_PRESETS
from foxacp.ops.custom_ops import skinny_partials_op

_spec = importlib.util.spec_from_file_location(
    "bench056", Path(__file__).parents[1] / "056-skinny-decode-gemm/bench.py"
)
bench056 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench056)


def time_graphs(graphs: dict, rounds: int, replays: int = 20) -> dict:
    """Microseconds per replay of each CUDA graph, one value per round: all warmed up first (the power state
    settles), then the graphs interleaved round by round, each timed by CUDA events over ``replays`` replays."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = {key: [] for key in graphs}
    for g in graphs.values():
        for _ in range(replays):
            g.replay()
    for _ in range(rounds):
        for key, g in graphs.items():
            start.record()
            for _ in range(replays):
                g.replay()
            end.record()
            torch.cuda.synchronize()
            times[key].append(start.elapsed_time(end) / replays * 1e3)
    return times


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="760M")
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--glue", type=int, nargs="+", default=[0, 1, 2])
    a = p.parse_args()
    torch.manual_seed(0)
    dev = torch.device("cuda")
    shapes = [s for name, s in bench056.gemms(a.preset).items() if name != "head"]
    layers = MODEL_PRESETS[a.preset].n_layers
    weights = [[torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02 for n, k in shapes] for _ in range(layers)]
    xs = {k: torch.randn(a.rows, k, device=dev, dtype=torch.bfloat16) for _, k in shapes}
    for w in weights[0]:  # the kernel against float64 on this GPU (bf16 operands, float32 partials)
        got = skinny_partials_op(xs[w.shape[1]], w).sum(0).double()
        want = xs[w.shape[1]].double() @ w.double().T
        err = ((got - want).norm() / want.norm()).item()
        assert err < 1e-5, (tuple(w.shape), err)
    nbytes = sum(w.numel() * w.element_size() for ws in weights for w in ws)
    tiny = torch.zeros(1536, device=dev)

    def step(glue: int) -> None:
        for ws in weights:
            for w in ws:
                skinny_partials_op(xs[w.shape[1]], w)
                for _ in range(glue):
                    tiny.add_(1.0)  # one block of 1536 floats: a stand-in for a fused Inductor kernel

    graphs = {}
    for glue in a.glue:
        step(glue)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            step(glue)
        graphs[glue] = g
    times = time_graphs(graphs, a.rounds)
    bw = copy_bandwidth(dev)
    print(
        f"\n{a.preset}, {layers} layers x {len(shapes)} GEMMs, M={a.rows}, {nbytes / 1e9:.2f} GB, "
        f"{torch.cuda.get_device_name()}, copy bandwidth {bw / 1e9:.0f} GB/s"
    )
    print("| variant | us/step (median) | min-max | TB/s | of copy bandwidth | us per GEMM |")
    print("|---|---|---|---|---|---|")
    for glue, ts in times.items():
        us = statistics.median(ts)
        name = "gemms" if glue == 0 else f"glue {glue}"
        print(
            f"| {name} | {us:.0f} | {min(ts):.0f}-{max(ts):.0f} | {nbytes / us / 1e6:.2f} | "
            f"{nbytes / (us * 1e-6) / bw:.0%} | {us / (layers * len(shapes)):.2f} |"
        )


if __name__ == "__main__":
    main()
