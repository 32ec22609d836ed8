"""Compile the Triton kernels for sm_90 on a machine without a GPU and report what the compiler did.

Needs a Triton of the device's version in some Python (the kernels import nothing but triton), e.g.
    python3 -m venv /tmp/tr36 && /tmp/tr36/bin/pip install triton==3.6.0
    /tmp/tr36/bin/python notes/sm90_compile.py [path/to/kernels.py] [kernel ...]
Environment: MAXNREG=160 compiles under that register cap; HIST=1 adds every opcode's count and the total;
CONST=NAME=1,... sets a variant's extra integer constexprs; SHAPES=64x128w8s3,... the launch shapes.
Per kernel and launch shape: registers, stack/local bytes, shared memory, and SASS counts of the instructions
that matter here (HGMMA: Hopper tensor cores; MUFU.EX2: exp2; REDG/ATOMG: global atomics; LDL/STL: local memory;
UTMALDG: TMA loads). Costs no device time; says nothing about speed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 90, 32)
SASS_OPS = ("HGMMA", "HMMA", "MUFU.EX2", "REDG", "ATOMG", "LDL", "STL", "UTMALDG", "LDGSTS", "BAR.SYNC")


def _sig(fn, dtypes: dict[str, str], constexprs: dict) -> dict[str, str]:
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in dtypes:
            sig[name] = dtypes[name]
        elif name.startswith("stride") or name in ("total", "num_sh", "seq_q", "seq_k"):
            sig[name] = "i32"
        elif name in ("qk_scale", "sm_scale", "inv_scale"):
            sig[name] = "fp32"
        else:
            raise KeyError(f"no type for argument {name!r} of {fn.__name__}")
    return sig


def _cuobjdump(cubin: bytes, flag: str) -> str:
    tool = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([str(tool), flag, f.name], capture_output=True, text=True, check=True).stdout


def sass_counts(cubin: bytes) -> dict[str, int]:
    sass = _cuobjdump(cubin, "-sass")
    return {op: len(re.findall(rf"\b{re.escape(op)}\b", sass)) for op in SASS_OPS}


def resources(cubin: bytes) -> dict[str, int]:
    """Registers per thread, stack and local bytes (spills land there), from the cubin's resource table."""
    text = _cuobjdump(cubin, "-res-usage")
    return {k.lower(): int(v) for k, v in re.findall(r"(REG|STACK|LOCAL):(\d+)", text)}


def opcode_histogram(cubin: bytes) -> dict[str, int]:
    """Count of every SASS opcode (modifiers dropped), most frequent first."""
    ops = re.findall(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9]*)", _cuobjdump(cubin, "-sass"), re.M)
    counts: dict[str, int] = {}
    for op in ops:
        counts[op] = counts.get(op, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def report(fn, dtypes: dict[str, str], constexprs: dict, num_warps: int, num_stages: int) -> dict:
    src = ASTSource(fn, _sig(fn, dtypes, constexprs), constexprs)
    options = dict(num_warps=num_warps, num_stages=num_stages)
    if os.environ.get("MAXNREG"):  # register cap, as Blocks.maxnreg
        options["maxnreg"] = int(os.environ["MAXNREG"])
    k = triton.compile(src, target=TARGET, options=options)
    out = resources(k.asm["cubin"])
    out["smem"] = k.metadata.shared
    out.update(sass_counts(k.asm["cubin"]))
    if os.environ.get("HIST"):  # the whole opcode histogram, and the total
        hist = opcode_histogram(k.asm["cubin"])
        out["total"] = sum(hist.values())
        out["hist"] = hist
    return out


PTRS_FWD = dict(
    Q="*bf16", K="*bf16", V="*bf16", C="*fp64", O="*bf16", LSE="*fp32", KV_LO="*i32", CU_Q="*i32", CU_K="*i32"
)
PTRS_BWD = dict(
    Q="*bf16",
    K="*bf16",
    V="*bf16",
    C="*fp64",
    DO="*bf16",
    LSE="*fp32",
    DELTA="*fp32",
    RQ="*fp32",
    DK="*bf16",
    DV="*bf16",
    DQ="*bf16",
    DCK="*fp32",
    DCQ="*fp32",
    Q_HI="*i32",
    KV_LO="*i32",
    CU_Q="*i32",
    CU_K="*i32",
    DQA="*fp32",
    KC="*fp16",
    QC="*fp16",
)


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "src/foxacp/ops/triton_kernels.py"
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)  # by path: no package import, no torch
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    names = sys.argv[2:] or ["fwd_kernel", "dkdv_kernel", "dq_kernel"]
    shapes = {  # (BLOCK_M, BLOCK_N, warps, stages) as in ops/config.py for (9, 64), plus neighbours
        "fwd_kernel": [(128, 64, 4, 3), (128, 128, 8, 2), (128, 128, 8, 3)],
        "dkdv_kernel": [(64, 64, 4, 3), (32, 128, 4, 2)],
        "dq_kernel": [(128, 64, 4, 3)],
    }
    for name in names:
        fn = getattr(mod, name)
        base = name if name in shapes else name.rsplit("_", 1)[0] + "_kernel"
        todo = shapes.get(base, shapes["dkdv_kernel"])
        if os.environ.get("SHAPES"):  # SHAPES=64x128w8s3,... replaces the list above
            todo = [tuple(map(int, re.split("[xws]", x))) for x in os.environ["SHAPES"].split(",")]
        for bm, bn, w, s in todo:
            cx = dict(HEAD_DIM=64, BLOCK_M=bm, BLOCK_N=bn, TILE_M=128, TILE_N=128, ACP=False, GROUP=1)
            cx.update({k: 24 for k in ("H", "HKV") if k in fn.arg_names})
            cx.update(QC_BLOCK=128, KC_BLOCK=128)  # QC on dQ's query blocks, KC on the forward's key blocks
            for item in os.environ.get("CONST", "").split(","):  # extra constexprs of a variant: CONST=A=1,B=0
                if item:
                    cx[item.split("=")[0]] = int(item.split("=")[1])
            cx = {k: v for k, v in cx.items() if k in fn.arg_names}
            descs = {
                "desc_k": f"tensordesc<bf16[{bn}, 64]>",
                "desc_v": f"tensordesc<bf16[{bn}, 64]>",
                "desc_kc": f"tensordesc<fp16[{bn}, 16]>",
                "desc_qc": f"tensordesc<fp16[{bm}, 16]>",
                "desc_q": f"tensordesc<bf16[{bm}, 64]>",
                "desc_do": f"tensordesc<bf16[{bm}, 64]>",
            }
            try:
                r = report(fn, {**PTRS_FWD, **PTRS_BWD, **descs}, cx, w, s)
            except Exception as e:  # report and go on: one variant failing must not hide the others
                r = {"error": str(e).splitlines()[-1][:200]}
            print(f"{name} {bm}x{bn} w{w} s{s}: {r}")


if __name__ == "__main__":
    main()
