"""Register caps per kernel (Blocks.maxnreg) on the current GPU, 24 heads x 64 (or 12 x 128), bf16, 32k tokens.

For each variant of the table config: two float64 checks (GQA and packed, exact and ACP), then the median ms
of the op (exact and ACP, fwd and fwd+bwd, 16k and 4k). A cap of 168 registers lets 3 programs of 4 warps
share a multiprocessor instead of 2; the compile report (notes/sm90_compile.py) shows what it spills.

    PYTHONPATH=src python notes/tune_regs.py [128]
"""

from __future__ import annotations

import dataclasses
import sys

import torch
import triton.testing

import foxacp
from foxacp.bench.correctness import TOLERANCE, check
from foxacp.bench.gates import GateProfile, synthetic_log_fgate
from foxacp.ops import config

DIM = int(sys.argv[1]) if len(sys.argv) > 1 else 64
HEADS = 24 if DIM == 64 else 12
KEY = (9, DIM)
BASE = config._TABLE[KEY]


def variant(**blocks: config.Blocks) -> config.KernelConfig:
    return dataclasses.replace(BASE, **blocks)


def capped(kernel: str, regs: int) -> config.KernelConfig:
    return variant(**{kernel: dataclasses.replace(getattr(BASE, kernel), maxnreg=regs)})


if DIM == 64:
    VARIANTS = {"table": BASE, "fwd168": capped("fwd", 168), "fwd160": capped("fwd", 160),
                "dkdv168": capped("dkdv", 168), "dq168": capped("dq", 168)}  # fmt: skip
else:  # 128x64 blocks of 8 warps at 128 registers: 2 programs per multiprocessor, 128 B of stack
    VARIANTS = {"table": BASE, "fwd128x64w8r128": variant(fwd=config.Blocks(128, 64, 8, 2, 16, maxnreg=128)),
                "fwd128x64w8r128s3": variant(fwd=config.Blocks(128, 64, 8, 3, 16, maxnreg=128))}  # fmt: skip


def ms(fn, grads) -> float:
    fn()
    torch.cuda.synchronize()
    return triton.testing.do_bench(fn, warmup=10, rep=40, grad_to_none=grads, return_mode="median")


def main() -> None:
    foxacp.set_value_checks(False)
    rows = []
    cu = torch.tensor([0, 1, 2500, 3001, 7000], dtype=torch.int32, device="cuda")
    for name, cfg in VARIANTS.items():
        config._TABLE[KEY] = cfg
        worst = max(
            check(B=2, Tq=1000, Tk=1000, Hq=4, Hkv=2, D=DIM, dtype=torch.bfloat16, log_eps=eps).worst
            for eps in (None, -10.0)
        )
        worst = max(worst, check(1, 7000, 7000, 4, 2, DIM, torch.bfloat16, -10.0, cu_seqlens=cu).worst)
        assert worst < TOLERANCE[torch.bfloat16], (name, worst)
        for T in (16384, 4096):
            B = 32768 // T
            g = synthetic_log_fgate(B, T, HEADS, GateProfile(), seed=1, device="cuda")
            q, k, v, do = (torch.randn(B, T, HEADS, DIM, device="cuda", dtype=torch.bfloat16) for _ in range(4))
            leaves = [t.requires_grad_() for t in (q, k, v, g)]
            for eps in (None, -10.0):
                f = lambda: foxacp.forgetting_attention(*leaves, log_eps=eps, qk_bound=DIM**0.5)  # noqa: E731
                with torch.no_grad():
                    t_fwd = ms(f, None)
                t_all = ms(lambda: f().backward(do), leaves)  # noqa: B023
                rows.append((name, T, eps is not None, t_fwd, t_all, worst))
                print(rows[-1], flush=True)
    config._TABLE[KEY] = BASE
    print("\nvariant   T      acp  fwd ms  fwd+bwd ms  worst err vs float64")
    for name, T, acp, t_fwd, t_all, worst in rows:
        print(f"{name:8s} {T:6d} {int(acp):4d} {t_fwd:7.3f} {t_all:11.3f}  {worst:.1e}")


if __name__ == "__main__":
    main()
