"""The few-row GEMM (ops/triton_skinny.py) against cuBLAS (F.linear) at the GEMMs of a FoX Pro decode step.

    PYTHONPATH=src python experiments/056-skinny-decode-gemm/bench.py [--out DIR]

Per preset (125M, 360M, 760M) and rows M in {1, 4, 16}: the five GEMMs of a block in a fused decode step (the
stacked in-projections, W_o, [W_gate; W_up], W_down) and the LM head at vocabulary 50304, in bf16. Each is checked
against float64 first (no further off than cuBLAS, or within bf16 rounding), then timed as CUDA-graph replays
(triton.testing.do_bench_cudagraph, median), interleaved over rounds: the kernel alone (what a compiled step pays:
the sum of its float32 partials fuses into the product's consumer there), skinny_linear eager (kernel + sum + cast)
and cuBLAS. Prints a table; writes skinny.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
import triton.testing

from foxacp.model.config import MODEL_PRESETS, mlp_hidden
from foxacp.ops.custom_ops import skinny_partials_op
from foxacp.ops.skinny import skinny_linear
from foxacp.ops.triton_skinny import split_k

VOCAB = 50304


def gemms(preset: str) -> dict[str, tuple[int, int]]:
    """(N, K) of each GEMM of a decode step of ``preset`` (FoX Pro, fused projections)."""
    cfg = MODEL_PRESETS[preset]
    d, hd, hq, hkv, h = cfg.d_model, cfg.head_dim, cfg.n_heads, cfg.kv_heads, mlp_hidden(cfg)
    return {
        "in-proj": (hq * hd + 2 * hkv * hd + hq * hd + 2 * hkv, d),
        "W_o": (d, hq * hd),
        "mlp-in": (2 * h, d),
        "W_down": (d, h),
        "head": (VOCAB, d),
    }


def graph_ms(fn, rep: int = 200) -> float:
    return triton.testing.do_bench_cudagraph(fn, rep=rep, return_mode="median")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--presets", nargs="+", default=["760M", "360M", "125M"], help="in this order")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    bw = None
    rows = []
    for preset in a.presets:
        for name, (n, k) in gemms(preset).items():
            for m in (1, 4, 16):
                w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                exact = x.double() @ w.double().T
                err = (skinny_linear(x, w).double() - exact).abs().max().item()
                err_cublas = (F.linear(x, w).double() - exact).abs().max().item()
                ok = err <= max(1.5 * err_cublas, 2**-7 * exact.abs().max().item())
                times = {"kernel": [], "skinny": [], "cublas": []}
                for _ in range(a.rounds):
                    # the kernel alone (compiled, the sum of its partials fuses into the consumer), and eager
                    times["kernel"].append(graph_ms(lambda: skinny_partials_op(x, w)))  # noqa: B023
                    times["skinny"].append(graph_ms(lambda: skinny_linear(x, w)))  # noqa: B023
                    times["cublas"].append(graph_ms(lambda: F.linear(x, w)))  # noqa: B023
                ms = {key: sorted(v)[len(v) // 2] for key, v in times.items()}
                if bw is None:  # device copy bandwidth, for the share of HBM
                    big = torch.empty(2**28, device="cuda", dtype=torch.uint8)
                    bw = 2 * big.numel() / (graph_ms(lambda: big.clone(), 100) * 1e-3) / 1e9  # noqa: B023
                gb = w.numel() * 2 / 1e9
                rows.append(
                    dict(preset=preset, gemm=name, m=m, n=n, k=k, splits=split_k(n, k, x.device), ok=ok,
                         err=err, err_cublas=err_cublas, kernel_ms=ms["kernel"], skinny_ms=ms["skinny"],
                         cublas_ms=ms["cublas"], kernel_hbm=gb / (ms["kernel"] * 1e-3) / bw,
                         skinny_hbm=gb / (ms["skinny"] * 1e-3) / bw, cublas_hbm=gb / (ms["cublas"] * 1e-3) / bw)
                )  # fmt: skip
                r = rows[-1]
                print(f"{preset:5} {name:8} M={m:2} N={n:6} K={k:5} split={r['splits']:2} ok={ok} "
                      f"kernel {r['kernel_ms'] * 1e3:7.1f} us ({r['kernel_hbm']:.0%}) "
                      f"+sum {r['skinny_ms'] * 1e3:7.1f} us ({r['skinny_hbm']:.0%}) "
                      f"cuBLAS {r['cublas_ms'] * 1e3:7.1f} us ({r['cublas_hbm']:.0%})", flush=True)  # fmt: skip
                # after every row: a call cut short by its time limit keeps what it measured
                meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                            copy_GBps=bw)  # fmt: skip
                (a.out / "skinny.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    print("\n| preset | per step (one of each GEMM per layer, + head) | M | kernel us | eager us | cuBLAS us | ratio |")
    for preset in a.presets:
        layers = MODEL_PRESETS[preset].n_layers
        for m in (1, 4, 16):
            sel = [r for r in rows if r["preset"] == preset and r["m"] == m]
            per = {key: sum(r[key] * (1 if r["gemm"] == "head" else layers) for r in sel) * 1e3
                   for key in ("kernel_ms", "skinny_ms", "cublas_ms")}  # fmt: skip
            print(f"| {preset} | {layers} layers | {m} | {per['kernel_ms']:.0f} | {per['skinny_ms']:.0f} | "
                  f"{per['cublas_ms']:.0f} | {per['kernel_ms'] / per['cublas_ms']:.2f} |")  # fmt: skip
    print("all checks pass" if all(r["ok"] for r in rows) else "SOME CHECKS FAIL")


if __name__ == "__main__":
    main()
