"""Check the kernels against a float64 reference on the device itself; print the worst relative errors.

    python -m foxacp.bench.correctness [--quick] [--out DIR]    # writes results/<date>-<commit>-correctness-<device>/

Each case runs forward and backward of the Triton kernels at full size and compares the output and the
four gradients with the dense float64 reference on the same values (Triton 3.4 to 3.7.0 miscompiles a
transposed dot result on Hopper, so only a check on the GPU itself counts). A 64k-token case checks the
forward against a banded float64 reference (weights outside the band are below e^-300).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path

import torch

from foxacp.testing import TOLERANCE, Case, check, check_long

from .report import environment
from .results import RESULTS_ROOT, device_tag, result_dir


def cases(quick: bool):
    """The grid: dtypes x head dims x (exact, ACP) over plain, GQA, Tq < Tk, packed and long shapes."""
    dtypes = [torch.bfloat16] if quick else [torch.bfloat16, torch.float16]
    dims = [64] if quick else [64, 128]
    lengths = [1000, 4096] if quick else [1000, 4096, 16384]
    for dtype in dtypes:
        for D in dims:
            for log_eps in (None, -10.0):
                for T in lengths:
                    heads = (4, 2) if T <= 4096 else (2, 1)
                    yield dict(B=2 if T <= 4096 else 1, Tq=T, Tk=T, Hq=heads[0], Hkv=heads[1], D=D, dtype=dtype,
                               log_eps=log_eps)  # fmt: skip
                yield dict(B=2, Tq=300, Tk=2000, Hq=4, Hkv=1, D=D, dtype=dtype, log_eps=log_eps)
                cu = torch.tensor([0, 1, 2500, 3001, 7000], dtype=torch.int32, device="cuda")
                yield dict(B=1, Tq=7000, Tk=7000, Hq=4, Hkv=2, D=D, dtype=dtype, log_eps=log_eps, cu_seqlens=cu)


def format_table(rows: list[Case]) -> str:
    """The Markdown table of the cases' relative errors and FLOP savings."""
    head = "| dtype | D | sequences | Hq/Hkv | log_eps | o | dq | dk | dv | dlogf | saving |\n" + "|---" * 11 + "|\n"
    fmt = lambda x: "-" if math.isnan(x) else f"{x:.1e}"  # noqa: E731
    body = "".join(
        f"| {r.dtype} | {r.head_dim} | {r.seq} | {r.heads} | {r.log_eps} | {fmt(r.err_o)} | {fmt(r.err_dq)} | "
        f"{fmt(r.err_dk)} | {fmt(r.err_dv)} | {fmt(r.err_dlogf)} | {r.flop_saving:.2f} |\n"
        for r in rows
    )
    return head + body


def write(rows: list[Case], meta: dict, out_dir: Path) -> list[Path]:
    """Write correctness.json ({"meta", "cases"}) and correctness.md under out_dir; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    header = "".join(f"- {k}: {meta.get(k)}\n" for k in ("device", "torch", "triton", "date", "commit"))
    js, md = out_dir / "correctness.json", out_dir / "correctness.md"
    js.write_text(json.dumps({"meta": meta, "cases": [asdict(r) for r in rows]}, indent=1))
    md.write_text("# Kernels against float64 on the device\n\n" + header + "\n" + format_table(rows))
    return [js, md]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="bf16, head dim 64, up to 4k tokens")
    ap.add_argument("--long", type=int, default=65536, help="tokens of the long forward check (0: skip)")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_ROOT, help="root of the result set folders")
    ap.add_argument("--out", type=Path, default=None, help="also copy correctness.json and .md here")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    meta = environment()
    rows = []
    for case in cases(args.quick):
        rows.append(check(**case))
        r = rows[-1]
        print(f"{r.dtype} D={r.head_dim} {r.seq} {r.heads} eps={r.log_eps}: worst {r.worst:.2e} ({r.seconds:.1f}s)")
    if args.long:
        for D in (64, 128):
            rows.append(check_long(args.long, 2, D, torch.bfloat16))
    failed = [r for r in rows if not r.worst <= TOLERANCE[getattr(torch, r.dtype)]]
    what = "correctness-quick" if args.quick else "correctness"
    device = device_tag(meta["device"])
    out_dir = result_dir(what, date=meta["date"], commit=meta["commit"], device=device, root=args.results_dir)
    for path in write(rows, meta, out_dir) + (write(rows, meta, args.out) if args.out else []):
        print(path)
    print(format_table(rows))
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
