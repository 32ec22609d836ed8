"""Extreme gates on the GPU and the cost of exactness: one device call.

    python experiments/045-exact-decay-tables/run.py check            # float64 checks, table printed last
    PYTHONPATH=<tree>/src python experiments/045-exact-decay-tables/run.py time NAME ROUND   # one A/B round
    python experiments/045-exact-decay-tables/run.py table ab.jsonl   # medians over rounds, per tree

check: every case of the op (bf16/fp16, head dims 64/128, T 128 and 4096, exact and ACP) against the float64
reference on the device, errors relative to max(||ref||, the quantity's natural scale), next to the same shape
with ordinary gates. time: do_bench medians of fwd and fwd+bwd, exact and ACP (qk_bound sqrt(D)), 32k tokens
per batch, synthetic gates, in the tree on PYTHONPATH (public API only, so it runs on older trees too).
Writes JSON lines under $OUT (default /tmp/exp_out).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

import foxacp

OUT = Path(os.environ.get("OUT", "/tmp/exp_out"))
SHAPES = [(24, 64, 4096), (24, 64, 16384), (12, 128, 4096)]  # (heads, head dim, tokens per sequence)


def _gates(pattern: str, B: int, T: int, H: int, gen: torch.Generator) -> torch.Tensor:
    g = torch.nn.functional.logsigmoid(3.0 + torch.randn(B, T, H, device="cuda", generator=gen)).float()
    kind, _, value = pattern.partition("@")
    if kind == "all":
        g.fill_(float(value))
    elif kind == "reset":  # -1e30 at a few tokens, one of them mid-block
        g[:, [T // 3, T // 2 + 5, T - 1]] = float(value)
    elif kind == "mixed":  # half the heads forget everything
        g[..., ::2] = float(value)
    return g


def _errors(q, k, v, g, sm_scale, log_eps) -> list[float]:
    from foxacp.testing import float64_reference, run_fwd_bwd

    outs = run_fwd_bwd((q, k, v, g), sm_scale=sm_scale, log_eps=log_eps)
    o, grads, go = outs
    o_ref, grads_ref = float64_reference((q, k, v, g), go, sm_scale=sm_scale, log_eps=log_eps)
    scale = sm_scale or q.shape[-1] ** -0.5
    qd, kd, vd, dod = (t.double() for t in (q, k, v, go))
    vmax, kmax, qmax = (t.norm(dim=-1).max() for t in (vd, kd, qd))
    natural = [vd.norm(), scale * dod.norm() * vmax * kmax, scale * dod.norm() * vmax * qmax, dod.norm(),
               dod.norm() * vmax]  # fmt: skip
    errs = []
    for a, b, n in zip([o, *grads], [o_ref, *grads_ref], natural, strict=True):
        a, b = a.double(), b.double()
        errs.append(((a - b).norm() / max(b.norm(), n)).item() if torch.isfinite(a).all() else math.inf)
    return errs


def check() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    foxacp.set_value_checks(True)
    patterns = ["ordinary", "all@-50", "all@-1e4", "all@-1e30", "reset@-1e30", "reset@-inf", "mixed@-1e30"]
    rows = []
    for dtype in (torch.bfloat16, torch.float16):
        for D in (64, 128):
            for T in (128, 4096):
                for log_eps in (None, -10.0):
                    for sm_scale in (None, 1e-4) if D == 64 else (None,):
                        gen = torch.Generator(device="cuda").manual_seed(T + D)
                        B, H = 2, 4
                        grow = 1.0 if sm_scale is None else (0.2 / sm_scale) ** 0.5 / 4
                        q, k, v = (torch.randn(B, T, H, D, device="cuda", generator=gen) for _ in range(3))
                        q, k, v = (q * grow).to(dtype), (k * grow).to(dtype), v.to(dtype)
                        for pattern in patterns:
                            g = _gates(pattern, B, T, H, gen)
                            errs = _errors(q, k, v, g, sm_scale, log_eps)
                            row = dict(dtype=str(dtype)[6:], D=D, T=T, log_eps=log_eps, sm_scale=sm_scale,
                                       pattern=pattern, errs=errs, worst=max(errs))  # fmt: skip
                            rows.append(row)
                            print(json.dumps(row), flush=True)
    with (OUT / "check.jsonl").open("w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    print("\nworst scaled error (o, dq, dk, dv, dlogf) per pattern and dtype, over D, T, eps, sm_scale:")
    for dtype in ("bfloat16", "float16"):
        for pattern in patterns:
            sel = [r for r in rows if r["dtype"] == dtype and r["pattern"] == pattern]
            print(f"{dtype:9s} {pattern:12s} {max(r['worst'] for r in sel):.2e}")


def _ms(fn) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=300, rep=400, return_mode="median")


def time_round(name: str, rnd: int) -> None:
    """One round in the tree on PYTHONPATH; NAME "new-dq64" runs dQ on its short-context blocks at every length,
    "new-fwdsub64" the forward's diagonal in sub-blocks of 64 keys."""
    import contextlib
    import dataclasses

    foxacp.set_value_checks(False)
    if name.endswith("-dq64") or name.endswith("-fwdsub64"):
        from foxacp.ops.config import kernel_config, use_kernel_config

        cfg = kernel_config(torch.device("cuda"), 64)
        if name.endswith("-dq64"):
            cfg = dataclasses.replace(cfg, dq=cfg.dq_short)
        else:
            cfg = dataclasses.replace(cfg, fwd=dataclasses.replace(cfg.fwd, sub=64))
        ctx = use_kernel_config(cfg)
    else:
        ctx = contextlib.nullcontext()
    with ctx:
        _time_shapes(name, rnd)


def _time_shapes(name: str, rnd: int) -> None:
    from foxacp.bench.gates import GateProfile, synthetic_log_fgate

    OUT.mkdir(parents=True, exist_ok=True)
    only = os.environ.get("AB_SHAPES")  # e.g. "24x64x4096": a subset of SHAPES
    for H, D, T in SHAPES:
        if ("-" in name and D != 64) or (only and f"{H}x{D}x{T}" not in only.split(",")):
            continue
        B = max(1, 32768 // T)
        g = synthetic_log_fgate(B, T, H, GateProfile(), seed=1, device="cuda")
        q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
        leaves = [t.requires_grad_() for t in (q, k, v, g)]
        row = dict(tree=name, round=rnd, H=H, D=D, T=T)
        for eps in (None, -10.0):
            f = lambda eps=eps: foxacp.forgetting_attention(*leaves, log_eps=eps, qk_bound=D**0.5)  # noqa: E731
            tag = "exact" if eps is None else "acp"
            with torch.no_grad():
                row[f"{tag}_fwd"] = _ms(f)
            row[f"{tag}_fwdbwd"] = _ms(lambda f=f: f().backward(do))
        print(json.dumps(row), flush=True)
        with (OUT / "ab.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")


def table(path: str) -> None:
    rows = defaultdict(list)
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        rows[(r["H"], r["D"], r["T"], r["tree"])].append(r)
    keys = ("exact_fwd", "acp_fwd", "exact_fwdbwd", "acp_fwdbwd")
    print("shape        tree " + " ".join(f"{k:>13s}" for k in keys))
    for (H, D, T, tree), rs in sorted(rows.items()):
        print(f"{H}x{D} {T:6d} {tree:4s} " + " ".join(f"{statistics.median(r[k] for r in rs):13.3f}" for k in keys))


if __name__ == "__main__":
    {"check": lambda: check(), "time": lambda: time_round(sys.argv[2], int(sys.argv[3])),
     "table": lambda: table(sys.argv[2])}[sys.argv[1]]()  # fmt: skip
