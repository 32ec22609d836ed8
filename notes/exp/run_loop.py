"""One device call: one key loop per program (notes/kernels.md #27) against src, each checked against float64 first.

  new   - src: key loops split into unmasked and masked ranges (two or three loops per program).
  w8    - src with the forward in 128x128 blocks of 8 warps at 128 registers (2 programs per SM).
  f1    - notes/exp/var_kernels.py: the forward in one loop (the mask behind a block-uniform branch, so each
          program fills its load pipeline once); run10 had the backward kernels in one loop too (slower).
  f1w8  - f1 with w8's forward blocks.
Times (median of do_bench): 24 heads x 64, bf16, 32k tokens, 4k/8k/16k, exact and ACP, forward and
forward+backward, cuDNN beside them; 12 x 128 forwards. Prints a table last.

    PYTHONPATH=src:notes/exp python notes/exp/run_loop.py [variant ...]
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import torch
import var_kernels
from run_fwd import ms, sdpa, worst_error

import foxacp
from foxacp.bench.gates import GateProfile, synthetic_log_fgate
from foxacp.ops import config, triton_kernels, triton_op

KEY = (9, 64)
TABLE = config._TABLE[KEY]
W8 = dataclasses.replace(TABLE, fwd=config.Blocks(128, 128, 8, 2, head_group=16, maxnreg=128))
VARIANTS = {
    "new": (triton_kernels, TABLE),
    "w8": (triton_kernels, W8),
    "f1": (var_kernels, TABLE),
    "f1w8": (var_kernels, W8),
}
FULL = ("new", "f1w8")  # the backward is src's in every variant: forward+backward timed for these only
OUT = Path(os.environ.get("OUT", "/tmp/exp_out"))


def use(name: str) -> None:
    triton_op.kern, config._TABLE[KEY] = VARIANTS[name]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    foxacp.set_value_checks(False)
    names = sys.argv[1:] or list(VARIANTS)
    rows = []
    H, D = 24, 64
    for T in (4096, 8192, 16384):
        rows.append(("cudnn", T, 0, sdpa(32768 // T, T, H, D, False), sdpa(32768 // T, T, H, D, True), 0.0))
        print(json.dumps(rows[-1]), flush=True)
    cudnn128 = {T: sdpa(32768 // T, T, 12, 128, False) for T in (4096, 16384)}
    print("cudnn 12x128 fwd", cudnn128, flush=True)
    for name in names:
        use(name)
        err = worst_error()
        for T in (4096, 8192, 16384):
            B = 32768 // T
            g = synthetic_log_fgate(B, T, H, GateProfile(), seed=1, device="cuda")
            q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
            leaves = [t.requires_grad_() for t in (q, k, v, g)]
            for eps in (None, -10.0):
                f = lambda: foxacp.forgetting_attention(*leaves, log_eps=eps, qk_bound=D**0.5)  # noqa: B023, E731
                with torch.no_grad():
                    t_fwd = ms(f)
                t_all = ms(lambda: f().backward(do), leaves) if name in FULL else 0.0  # noqa: B023
                rows.append((name, T, int(eps is not None), t_fwd, t_all, err))
                print(json.dumps(rows[-1]), flush=True)
                with (OUT / "loop.jsonl").open("a") as fh:
                    fh.write(json.dumps(rows[-1]) + "\n")
    for name in ("new", "f1"):  # head dim 128: the forward only
        use(name)
        H128 = 12
        for T in (4096, 16384):
            B = 32768 // T
            g = synthetic_log_fgate(B, T, H128, GateProfile(), seed=1, device="cuda")
            q, k, v = (torch.randn(B, T, H128, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            with torch.no_grad():
                t_fwd = ms(lambda: foxacp.forgetting_attention(q, k, v, g, log_eps=None, qk_bound=128**0.5))  # noqa: B023
            rows.append((name + "-d128", T, 0, t_fwd, 0.0, 0.0))
            print(json.dumps(rows[-1]), flush=True)
    use("new")
    cudnn = {r[1]: r for r in rows if r[0] == "cudnn"}
    print("\nvariant    T    acp  fwd ms (x cuDNN)   fwd+bwd ms (x cuDNN)  err/tol")
    for name, T, acp, t_fwd, t_all, err in rows:
        c = cudnn[T] if "d128" not in name else (0, 0, 0, cudnn128[T], 1.0)
        print(
            f"{name:8s} {T:6d} {acp:3d} {t_fwd:7.3f} ({t_fwd / c[3]:.2f}) {t_all:9.3f} ({t_all / c[4]:.2f})  {err:.2f}"
        )


if __name__ == "__main__":
    main()
