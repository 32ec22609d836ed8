"""067's chain of a 760M decode step's 96 few-row GEMMs, each followed by one small kernel, with and without
programmatic dependent launch (PDL) on both: does starting each kernel while the one before it finishes close
the ~1 us gaps between them, and does the GEMM itself stream faster when launched early?

    PYTHONPATH=src python experiments/069-decode-pdl/chain_pdl.py [--preset 760M --rows 1]

The small kernel is a Triton kernel here (one block adding 1 to 1536 floats), so that it can take part in PDL as
Inductor's kernels do with TORCHINDUCTOR_ENABLE_PDL=1. Each variant is one CUDA graph; the GEMM's output is checked
against float64 in both modes first. Timed by CUDA events over graph replays, the variants interleaved in rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
from pathlib import Path

import torch
import triton
import triton.language as tl

from foxacp.bench.decode_attention import copy_bandwidth
from foxacp.model.config import MODEL_PRESETS
from foxacp.ops import triton_skinny

_spec = importlib.util.spec_from_file_location(
    "bench056", Path(__file__).parents[1] / "056-skinny-decode-gemm/bench.py"
)
bench056 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench056)
_spec = importlib.util.spec_from_file_location("chain067", Path(__file__).parents[1] / "067-decode-gemm-chain/chain.py")
chain067 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chain067)


@triton.jit
def _glue(X, n, PDL: tl.constexpr, BLOCK: tl.constexpr):
    if PDL:
        tl.extra.cuda.gdc_wait()
    offs = tl.arange(0, BLOCK)
    x = tl.load(X + offs, mask=offs < n)
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
    tl.store(X + offs, x + 1.0, mask=offs < n)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="760M")
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    torch.manual_seed(0)
    dev = torch.device("cuda")
    shapes = [s for name, s in bench056.gemms(a.preset).items() if name != "head"]
    layers = MODEL_PRESETS[a.preset].n_layers
    weights = [[torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02 for n, k in shapes] for _ in range(layers)]
    xs = {k: torch.randn(a.rows, k, device=dev, dtype=torch.bfloat16) for _, k in shapes}
    nbytes = sum(w.numel() * w.element_size() for ws in weights for w in ws)
    tiny = torch.zeros(1536, device=dev)

    def gemm(x, w, pdl: bool):
        os.environ["FOXACP_PDL"] = "1" if pdl else "0"  # read at each launch (ops.config.dependent_launch)
        return triton_skinny.skinny_partials(x, w)

    for pdl in (False, True):  # the kernel against float64 on this GPU, both ways
        for w in weights[0]:
            got = gemm(xs[w.shape[1]], w, pdl).sum(0).double()
            want = xs[w.shape[1]].double() @ w.double().T
            err = ((got - want).norm() / want.norm()).item()
            assert err < 1e-5, (pdl, tuple(w.shape), err)

    def step(pdl: bool, glue: int) -> None:
        for ws in weights:
            for w in ws:
                gemm(xs[w.shape[1]], w, pdl)
                for _ in range(glue):
                    _glue[(1,)](tiny, tiny.numel(), PDL=pdl, BLOCK=2048, **({"launch_pdl": True} if pdl else {}))

    variants = {(pdl, glue): None for pdl in (False, True) for glue in (0, 1, 2)}
    for pdl, glue in variants:
        step(pdl, glue)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            step(pdl, glue)
        variants[(pdl, glue)] = g
    times = chain067.time_graphs(variants, a.rounds)
    bw = copy_bandwidth(dev)
    print(
        f"\n{a.preset}, {layers} x {len(shapes)} GEMMs, M={a.rows}, {nbytes / 1e9:.2f} GB, "
        f"{torch.cuda.get_device_name()}, copy bandwidth {bw / 1e9:.0f} GB/s"
    )
    print("| PDL | glue kernels per GEMM | us/step (median) | min-max | of copy bandwidth | us per GEMM |")
    print("|---|---|---|---|---|---|")
    for (pdl, glue), ts in times.items():
        us = statistics.median(ts)
        print(
            f"| {'on' if pdl else 'off'} | {glue} | {us:.0f} | {min(ts):.0f}-{max(ts):.0f} | "
            f"{nbytes / (us * 1e-6) / bw:.0%} | {us / (layers * len(shapes)):.2f} |"
        )


if __name__ == "__main__":
    main()
