"""Experiment #29: persistent dK/dV and dQ kernels (a program walks several blocks; no new program per block).

The kernels here are src's, rewritten from its source text at import: the body of ``dkdv_kernel`` and
``dq_kernel`` runs inside ``for item in range(program_id, num_items, num_programs)``, the (sequence, head,
block) of each item decoded in the grid's own order (heads of a group fastest, heaviest blocks first), and
early returns become conditions. ``use(on)`` swaps them in for src's launches (same arguments; the wrapper
turns the 3-d grid into one persistent program per resident slot).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import torch
import triton

from foxacp.ops import triton_kernels as src
from foxacp.ops import triton_op

PER_SM = 2  # resident programs per multiprocessor for both kernels at their register counts (notes #9)
_HEAD = """    seq, {h}, {m} = _program_item(item, GX, GY, num_sh, {H})
"""


def _persistent(name: str, head_arg: str) -> str:
    text = Path(src.__file__).read_text()
    start = text.index(f"@triton.jit\ndef {name}(")
    end = text.find("\n@triton.jit", start + 10)
    fn = text[start : end if end > 0 else len(text)]
    header, body = fn.split("):\n", 1)
    header = header.replace("num_sh,", "num_sh, num_items, GX, GY,", 1)
    lines = body.splitlines()
    out = []
    depth = 0
    for line in lines:
        s = line.strip()
        if s.startswith("seq, ") and "_program(" in s:
            out.append(
                " " * 4
                + _HEAD.strip().format(
                    h=head_arg, m="m" if name == "dq_kernel" else "n", H=s.split("(")[1].split(",")[1].strip(" )")
                )
            )
            continue
        if s.startswith("m = tl.num_programs(1) - 1 - m"):
            out.append("    m = GY - 1 - m")
            continue
        m = re.match(r"if (.*):$", s)
        if m and lines[lines.index(line) + 1].strip() == "return":
            out.append("    " + "    " * depth + f"if not ({m.group(1)}):")
            depth += 1
            continue
        if s == "return":
            continue
        out.append("    " * depth + line if line.strip() else line)
    body = "\n".join(out)
    body = textwrap.indent(body, "    ")
    return f"{header}):\n    for item in range(tl.program_id(0), num_items, tl.num_programs(0)):\n{body}\n"


PRELUDE = """
import triton
import triton.language as tl
from foxacp.ops.triton_kernels import (LOG2E, KC_COLS, _bounds, _query_rows, _key_range, _dkdv_inner,
                                       _dq_inner)


@triton.jit
def _program_item(item, GX, GY, num_sh, H: tl.constexpr):
    x = item % GX
    y = (item // GX) % GY
    sh = (item // (GX * GY)) * GX + x
    seq = tl.where(sh < num_sh, sh // H, -1)
    return seq, sh % H, y
"""

SOURCE = (
    PRELUDE
    + "\n\n@triton.jit\n"
    + _persistent("dkdv_kernel", "kvh").split("\n", 1)[1]
    + "\n\n"
    + ("@triton.jit\n" + _persistent("dq_kernel", "h").split("\n", 1)[1])
)
_path = Path(__file__).with_name("_var_persist_kernels.py")
_path.write_text(SOURCE)
import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("_var_persist_kernels", _path)
mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mod)


class _Launch:
    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        gx, gy, gz = grid
        items = gx * gy * gz
        sms = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 2
        slots = sms * PER_SM
        kernel = self.kernel

        def launch(*args, **kw):
            i = list(kernel.arg_names).index("num_sh")
            args = (*args[: i + 1], items, gx, gy, *args[i + 1 :])
            return kernel[(min(items, slots),)](*args, **kw)

        return launch


class _Kern:
    def __init__(self, on: bool):
        self.on = on

    def __getattr__(self, name):
        if self.on and name in ("dkdv_kernel", "dq_kernel"):
            return _Launch(getattr(mod, name))
        return getattr(src, name)


def use(on: bool) -> None:
    triton_op.kern = _Kern(on) if on else src


__all__ = ["use", "triton"]
