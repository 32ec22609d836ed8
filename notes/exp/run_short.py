"""One device call: per-program costs of the kernels (notes/kernels.md #31), A/B of whole op versions.

Variants: ``src`` (the op in the tree), ``*-flip`` (any variant on the same inputs with the heads' gates in
reverse order: the program order changes, the work does not), ``src-loads`` (the same, but every batch loads its sequence bounds
from the offsets in memory, as packed batches do), ``cfg-*`` (src with other blocks: ``CONFIGS``), and any
module under notes/exp with a ``triton_attention``: run20 compared copies of the op between the two changes
of #31 (since removed), run23 3516f1f's op, restored for the call as ``prev_op.py`` over ``prev_kernels.py``
(``git show 3516f1f:src/foxacp/ops/triton_op.py`` with its imports made absolute), run27 ``v_early`` and ``v_dq1``
(``git show ac70157:notes/exp/v_early.py``, over ``v_op.py`` and ``v_kernels.py`` of the same commit). Each is installed as ``triton_op.triton_attention``, checked against float64 on the
GPU, then timed (do_bench median, exact and ACP) in two interleaved rounds; MODE=fwd times the forward alone
and SHAPES=HxDxT,... replaces the shapes.

    PYTHONPATH=src:notes/exp python notes/exp/run_short.py [variant ...]
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from pathlib import Path

import run_acp
import run_fwd

import foxacp
from foxacp.bench.report import ACP_SLACK
from foxacp.ops import config, triton_op
from foxacp.ops.acp import make_plan
from foxacp.ops.config import Blocks

OUT = Path(os.environ.get("OUT", "/tmp/exp_out"))
SRC = triton_op.triton_attention
UNIFORM = triton_op._uniform
SHAPES = [(24, 64, 4096), (24, 64, 8192), (24, 64, 16384), (16, 64, 4096), (12, 64, 4096)]


CONFIGS = {
    "cfg-dq128x64s2": dataclasses.replace(run_fwd.TABLE, dq=Blocks(128, 64, 4, 2, head_group=4)),
    "cfg-fwdg32": dataclasses.replace(run_fwd.TABLE, fwd=dataclasses.replace(run_fwd.TABLE.fwd, head_group=32)),
    "cfg-fwdg8": dataclasses.replace(run_fwd.TABLE, fwd=dataclasses.replace(run_fwd.TABLE.fwd, head_group=8)),
    "cfg-fwdg4": dataclasses.replace(run_fwd.TABLE, fwd=dataclasses.replace(run_fwd.TABLE.fwd, head_group=4)),
    "cfg-fwdg2": dataclasses.replace(run_fwd.TABLE, fwd=dataclasses.replace(run_fwd.TABLE.fwd, head_group=2)),
    "cfg-dqg16": dataclasses.replace(run_fwd.TABLE, dq=dataclasses.replace(run_fwd.TABLE.dq, head_group=16)),
    # dK/dV at 168 registers at every context (3 programs per multiprocessor instead of 2; sm_90 compile: 216-280 B
    # of stack); cfg-dkdv-long: the long-context dK/dV blocks at every context (run31, run32; notes #34)
    "cfg-dkdv168s3": dataclasses.replace(
        run_fwd.TABLE, dkdv=dataclasses.replace(run_fwd.TABLE.dkdv, maxnreg=168), dkdv_short=None
    ),
    "cfg-dkdv168s2": dataclasses.replace(
        run_fwd.TABLE, dkdv=dataclasses.replace(run_fwd.TABLE.dkdv, maxnreg=168, num_stages=2), dkdv_short=None
    ),
    "cfg-dkdv-long": dataclasses.replace(run_fwd.TABLE, dkdv_short=None),
    # dQ with more programs per multiprocessor (notes #37; sm_90 compile: 64x64 at 168 registers spills nothing,
    # at 128 24-32 B; 128x64 x 8 warps at 128: 32 B)
    **{
        f"cfg-dq{bm}w{w}s{s}r{r}": dataclasses.replace(run_fwd.TABLE, dq=Blocks(bm, 64, w, s, head_group=32, maxnreg=r))
        for bm, w, s, r in ((64, 4, 2, 168), (64, 4, 3, 168), (64, 4, 2, 128), (128, 8, 3, 128), (128, 8, 2, 128))
    },
    # forward blocks for short contexts (notes #41): more, smaller programs per multiprocessor for the short
    # rows of pruned heads
    **{
        f"cfg-fwd{bm}x{bn}w{w}s{s}r{r}": dataclasses.replace(
            run_fwd.TABLE, fwd=Blocks(bm, bn, w, s, head_group=32, maxnreg=r)
        )
        for bm, bn, w, s, r in ((128, 64, 4, 3, 160), (128, 64, 4, 2, 168), (64, 128, 4, 2, 168), (128, 128, 8, 2, 168))
    },
}
MODE = os.environ.get("MODE", "fwdbwd")
if os.environ.get("SHAPES"):
    SHAPES = [tuple(int(x) for x in sh.split("x")) for sh in os.environ["SHAPES"].split(",")]


def flipped(leaves):
    """The same inputs with the heads' gates in reverse order: the synthetic profile's slowest-forgetting
    (heaviest) heads come first in the grid. Same work, other program order (variants named ``*-flip``)."""
    q, k, v, g = leaves
    return [q, k, v, g.detach().flip(-1).contiguous().requires_grad_()]


def use(name: str) -> None:
    name = name.removesuffix("-flip")
    src = name.startswith(("src", "cfg"))
    triton_op.triton_attention = SRC if src else importlib.import_module(name).triton_attention
    packed = lambda p: UNIFORM(dataclasses.replace(p, uniform=False))  # noqa: E731
    triton_op._uniform = packed if name == "src-loads" else UNIFORM
    config._TABLE[run_fwd.KEY] = CONFIGS.get(name, run_fwd.TABLE)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    foxacp.set_value_checks(False)
    names = sys.argv[1:] or ["src", "src-loads"]
    for name in names:
        use(name)
        print(f"{name}: worst error / tol {run_fwd.worst_error():.2f}", flush=True)
    rows = []
    for H, D, T in SHAPES:
        leaves, do = run_acp.inputs(H, D, T)
        saving = make_plan(*leaves[:2], leaves[3], log_eps=-10.0, qk_bound=D**0.5).stats.flop_saving
        by_order = {False: leaves, True: flipped(leaves)}
        for rnd in range(2):
            for name in names:
                use(name)
                lv = by_order[name.endswith("-flip")]
                t = {eps: run_fwd.ms(run_acp.steps(lv, do, D, eps)[MODE], lv) for eps in (None, -10.0)}
                ratio = t[-10.0] / (ACP_SLACK * (1 - saving) * t[None])
                rows.append(dict(variant=name, H=H, D=D, T=T, round=rnd, exact=t[None], acp=t[-10.0], saving=saving,
                                 ratio=ratio))  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    with (OUT / "short.jsonl").open("w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    leaves, do = run_acp.inputs(24, 64, 4096)
    by_order = {False: leaves, True: flipped(leaves)}
    for name in names:
        use(name)
        lv = by_order[name.endswith("-flip")]
        for eps in (None, -10.0):
            kt = run_acp.kernel_times(run_acp.steps(lv, do, 64, eps)["fwdbwd"], lv)
            cells = "  ".join(f"{k[:4]} {kt[k]:.3f}" for k in ("fwd_kernel", "dq_kernel", "dkdv_kernel"))
            print(f"profile 24x64 4k {name:15s} eps={eps}: {cells}", flush=True)
    print("\nvariant          HxD      T  rnd  exact ms  acp ms  saving  acp/(1.15(1-s)exact)")
    for r in rows:
        print(f"{r['variant']:15s} {r['H']}x{r['D']} {r['T']:6d}  {r['round']}   {r['exact']:7.3f} {r['acp']:7.3f}  "
              f"{r['saving']:.3f}  {r['ratio']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
