"""Kernel block sweep: the op with other blocks (``foxacp.ops.config.use_kernel_config``), each variant checked
against float64 first, then timed forward + backward, exact and ACP.

    python experiments/026-backward-block-sweep/sweep.py [--head-dim 64] [--contexts 4k,16k] [--variants a,b]

The variants replace one kernel's blocks of the config the op would use on this device (its short-context blocks
too); a variant whose blocks do not divide that config's ACP tile grid is reported and skipped. Prints one JSON
line per (variant, context, log_eps), then a table. Timings need a CUDA GPU (``triton.testing.do_bench``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Sequence

import torch

import foxacp
from foxacp.ops.config import Blocks, KernelConfig, kernel_config, use_kernel_config
from foxacp.testing import TOLERANCE, float64_reference, make_inputs, rel_err, run_fwd_bwd

EPS = (None, -10.0)  # exact and ACP


def variants(base: KernelConfig) -> dict[str, Callable[[], KernelConfig]]:
    """Named variants of ``base``, built on demand (building one checks that its blocks fit the tile grid)."""

    def with_blocks(kernel: str, blocks: Blocks) -> Callable[[], KernelConfig]:
        short = {f"{kernel}_short": None} if kernel in ("dkdv", "dq") else {}
        return lambda: dataclasses.replace(base, **{kernel: blocks}, **short)

    return {
        "table": lambda: base,
        "dkdv64x64s4": with_blocks("dkdv", Blocks(64, 64, 4, 4, head_group=4)),
        "dkdv64x64w8": with_blocks("dkdv", Blocks(64, 64, 8, 3, head_group=4)),
        "dkdv128x64s3": with_blocks("dkdv", Blocks(128, 64, 4, 3, head_group=4)),
        "dq128x64s4": with_blocks("dq", Blocks(128, 64, 4, 4, head_group=4)),
        "dq64x64s3": with_blocks("dq", Blocks(64, 64, 4, 3, head_group=4)),
        "fwd128x64r168": with_blocks("fwd", Blocks(128, 64, 4, 2, head_group=16, maxnreg=168)),
    }


def check(cfg: KernelConfig, head_dim: int, device: str) -> float:
    """Worst error over o and the four gradients, as a fraction of the dtype's tolerance, of the op under
    ``cfg`` against float64 (GQA, a length that is no multiple of any block), exact and ACP."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    inputs = make_inputs(1, 300, 300, 4, 2, head_dim, dtype=dtype, device=device, seed=0)
    worst = 0.0
    for eps in EPS:
        with use_kernel_config(cfg):
            o, grads, do = run_fwd_bwd(inputs, backend="triton", log_eps=eps)
        o_ref, grads_ref = float64_reference(inputs, do, log_eps=eps)
        errs = [rel_err(o, o_ref)] + [rel_err(a, b) for a, b in zip(grads, grads_ref, strict=True)]
        worst = max(worst, *errs)
    return worst / TOLERANCE[dtype]


def do_bench_ms(fn: Callable[[], object], leaves: Sequence[torch.Tensor]) -> float:
    """Median ms of fn by triton.testing.do_bench (GPU)."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=100, rep=100, grad_to_none=list(leaves), return_mode="median"))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heads", type=int, default=24)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--contexts", default="4096,16384", help="comma-separated token counts")
    p.add_argument("--tokens", type=int, default=32768, help="tokens per batch (B = tokens // context)")
    p.add_argument("--variants", default="", help="comma-separated names (default: all)")
    p.add_argument("--device", default="cuda")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, timer: Callable[..., float] = do_bench_ms) -> list[dict]:
    """Run the sweep; returns the rows it printed (also the skipped variants, with their reason)."""
    args = parse_args(argv)
    base = kernel_config(torch.device(args.device), args.head_dim)
    table = variants(base)
    names = [n for n in args.variants.split(",") if n] or list(table)
    unknown = set(names) - set(table)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {list(table)}")
    foxacp.set_value_checks(False)
    rows = []
    for name in names:
        try:
            cfg = table[name]()
        except ValueError as e:  # blocks that do not divide this device's tile grid
            rows.append({"variant": name, "skipped": str(e)})
            print(json.dumps(rows[-1]), flush=True)
            continue
        err = check(cfg, args.head_dim, args.device)
        for T in (int(t) for t in args.contexts.split(",")):
            dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
            shape = (max(1, args.tokens // T), T, T, args.heads, args.heads, args.head_dim)
            leaves = [t.requires_grad_() for t in make_inputs(*shape, dtype=dtype, device=args.device, seed=1)]
            do = torch.randn_like(leaves[0])
            for eps in EPS:

                def step(eps=eps):
                    o = foxacp.forgetting_attention(*leaves, log_eps=eps, qk_bound=args.head_dim**0.5)
                    o.backward(do)

                with use_kernel_config(cfg):
                    ms = timer(step, leaves)
                rows.append({"variant": name, "T": T, "log_eps": eps, "ms": ms, "err_over_tol": err})
                print(json.dumps(rows[-1]), flush=True)
    print("\nvariant               T  log_eps  fwd+bwd ms  err/tol")
    for r in rows:
        if "skipped" in r:
            print(f"{r['variant']:16s} skipped: {r['skipped']}")
        else:
            print(f"{r['variant']:16s} {r['T']:6d} {r['log_eps']!s:>8} {r['ms']:10.3f}  {r['err_over_tol']:.2f}")
    return rows


if __name__ == "__main__":
    main()
