"""One device call: kernel variants side by side (notes/kernels.md #23-#25), each checked against float64 first.

  base - the kernels of 9814bb7, when notes/exp/op_base.py and base_kernels.py are there (copies of that
         commit's triton_op.py, importing base_kernels, and triton_kernels.py; kept in the tree until 529ebae);
  new  - src: the decay (and in dK/dV the LSE) enters the scores through tensor-core products with tables;
  r168, s2, r168s2, g8 - new with the forward at 168 registers, 2 stages, both, head groups of 8.
Times (median of do_bench) at 24 heads x 64 (and 12 x 128), bf16, 32k tokens, then a per-kernel profile of
exact fwd+bwd at 16k; prints a table last.

    PYTHONPATH=src:notes/exp python notes/exp/run_fwd.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import torch
import triton.testing

import foxacp
from foxacp.bench.correctness import TOLERANCE, check
from foxacp.bench.gates import GateProfile, synthetic_log_fgate
from foxacp.ops import config, triton_op

SRC_ATTN = triton_op.triton_attention
KEY = (9, 64)
TABLE = config._TABLE[KEY]


def fwd_blocks(**kw) -> config.KernelConfig:
    return dataclasses.replace(TABLE, fwd=dataclasses.replace(TABLE.fwd, **kw))


VARIANTS = {
    "new": (SRC_ATTN, TABLE),
    "r168": (SRC_ATTN, fwd_blocks(maxnreg=168)),
    "s2": (SRC_ATTN, fwd_blocks(num_stages=2)),
    "r168s2": (SRC_ATTN, fwd_blocks(num_stages=2, maxnreg=168)),
    "g8": (SRC_ATTN, fwd_blocks(head_group=8)),
}
try:  # the baseline, only where its copies were restored (see the docstring)
    import op_base

    VARIANTS = {"base": (op_base.triton_attention, TABLE), **VARIANTS}
except ImportError:
    pass
OUT = Path(os.environ.get("OUT", "/tmp/exp_out"))


def use(name: str) -> None:
    triton_op.triton_attention, config._TABLE[KEY] = VARIANTS[name]


def ms(fn, grads=None) -> float:
    fn()
    torch.cuda.synchronize()
    return triton.testing.do_bench(fn, warmup=10, rep=50, grad_to_none=grads, return_mode="median")


def worst_error() -> float:
    cu = torch.tensor([0, 1, 2500, 3001, 7000], dtype=torch.int32, device="cuda")
    cases = [dict(B=2, Tq=1000, Tk=1000, Hq=4, Hkv=2, D=64, dtype=torch.bfloat16, log_eps=e) for e in (None, -10.0)]
    cases += [dict(B=1, Tq=300, Tk=1000, Hq=4, Hkv=4, D=128, dtype=torch.float16, log_eps=-10.0)]
    cases += [dict(B=1, Tq=7000, Tk=7000, Hq=4, Hkv=2, D=64, dtype=torch.bfloat16, log_eps=-10.0, cu_seqlens=cu)]
    cases += [dict(B=1, Tq=513, Tk=1300, Hq=2, Hkv=1, D=64, dtype=torch.float16, log_eps=None)]
    worst = 0.0
    for c in cases:
        r = check(**c)
        worst = max(worst, r.worst / TOLERANCE[c["dtype"]])
    return worst  # as a fraction of each dtype's tolerance


def checked_configs(variants: dict[str, config.KernelConfig]):
    """Install each variant as the (9, 64) table entry, check it against float64, and yield (name, error / tol);
    a variant that fails to compile or run is reported and skipped. The table entry is restored at the end."""
    try:
        for name, cfg in variants.items():
            config._TABLE[KEY] = cfg
            try:
                err = worst_error()
            except Exception as e:  # report and go on
                print(name, "failed:", str(e).splitlines()[-1][:200], flush=True)
                continue
            yield name, err
    finally:
        config._TABLE[KEY] = TABLE


def sdpa(B, T, H, D, backward: bool) -> float:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(4))
    f = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        if backward:
            return ms(lambda: f().backward(do), [q, k, v])
        with torch.no_grad():
            return ms(f)


def profile(name: str) -> None:
    """Device time per kernel (ms per call) of exact fwd+bwd at 16k, 24 x 64."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    B, T, H, D = 2, 16384, 24, 64
    g = synthetic_log_fgate(B, T, H, GateProfile(), seed=1, device="cuda")
    q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    leaves = [t.requires_grad_() for t in (q, k, v, g)]
    step = lambda: foxacp.forgetting_attention(*leaves, qk_bound=D**0.5).backward(do)  # noqa: E731
    step()
    torch.cuda.synchronize()
    for t in leaves:
        t.grad = None
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()  # one step, leaves without .grad: no gradient accumulation kernels
        torch.cuda.synchronize()
    for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:10]:
        print(f"profile {name:5s} {e.device_time_total / 1e3:8.3f} ms  {e.key[:90]}", flush=True)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    foxacp.set_value_checks(False)
    rows = []
    names = sys.argv[1:] or list(VARIANTS)
    shapes = [(24, 64, 16384), (24, 64, 4096), (12, 128, 16384)]
    for H, D, T in shapes:
        B = 32768 // T
        rows.append(("cudnn", H, D, T, 0, sdpa(B, T, H, D, False), sdpa(B, T, H, D, True) if D == 64 else 0.0, 0.0))
    for name in names:
        use(name)
        err = worst_error()
        for H, D, T in shapes if name in ("base", "new") else shapes[:2]:
            B = 32768 // T
            g = synthetic_log_fgate(B, T, H, GateProfile(), seed=1, device="cuda")
            q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
            leaves = [t.requires_grad_() for t in (q, k, v, g)]
            for eps in (None, -10.0):
                f = lambda: foxacp.forgetting_attention(*leaves, log_eps=eps, qk_bound=D**0.5)  # noqa: B023, E731
                with torch.no_grad():
                    t_fwd = ms(f)
                full = D == 64 and name in ("base", "new")
                t_all = ms(lambda: f().backward(do), leaves) if full else 0.0  # noqa: B023
                rows.append((name, H, D, T, int(eps is not None), t_fwd, t_all, err))
                print(json.dumps(rows[-1]), flush=True)
                with (OUT / "exp.jsonl").open("a") as fh:
                    fh.write(json.dumps(rows[-1]) + "\n")
    for name in [n for n in ("base", "new") if n in VARIANTS]:
        use(name)
        profile(name)
    use("new")
    print("\nvariant  HxD      T    acp  fwd ms  fwd+bwd ms  err/tol")
    for name, H, D, T, acp, t_fwd, t_all, err in rows:
        print(f"{name:7s} {H:2d}x{D:<4d} {T:6d} {acp:3d} {t_fwd:7.3f} {t_all:10.3f}  {err:.2f}")


if __name__ == "__main__":
    main()
