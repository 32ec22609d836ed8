"""Check the kernels against a float64 reference on the device itself; print the worst relative errors.

    python -m foxacp.bench.correctness [--quick] [--out DIR]

Each case runs forward and backward of the Triton kernels at full size and compares the output and the
four gradients with the dense float64 reference on the same values (method.md: a GPU may carry a Triton
that miscompiles backward kernels, so only a check on the GPU itself counts). A 64k-token case checks the
forward against a banded float64 reference (weights outside the band are below e^-300).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import foxacp

# Pass thresholds by norm, relative to float64 (bf16 operands land between 1e-3 and 1e-2).
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}


@dataclass
class Case:
    dtype: str
    head_dim: int
    seq: str  # "B x Tq/Tk" or "packed [lengths]"
    heads: str  # "Hq/Hkv"
    log_eps: float | None
    err_o: float = math.nan
    err_dq: float = math.nan
    err_dk: float = math.nan
    err_dv: float = math.nan
    err_dlogf: float = math.nan
    flop_saving: float = math.nan
    seconds: float = math.nan

    @property
    def worst(self) -> float:
        return max(self.err_o, self.err_dq, self.err_dk, self.err_dv, self.err_dlogf)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return math.inf
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def make_gates(B: int, T: int, H: int, device, gen: torch.Generator) -> torch.Tensor:
    """Per-head forgetting rates from fast (log f ~ -1.3) to slow (log f ~ -0.007), with token noise."""
    head = torch.linspace(-1.0, 5.0, H, device=device)
    return F.logsigmoid(head + torch.randn(B, T, H, device=device, generator=gen)).float()


def check(B, Tq, Tk, Hq, Hkv, D, dtype, log_eps, cu_seqlens=None, device="cuda", seed=0) -> Case:
    """Run one case through the Triton backend and the float64 reference; return the relative errors."""
    gen = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(B, Tq, Hq, D, device=device, generator=gen).to(dtype)
    k = torch.randn(B, Tk, Hkv, D, device=device, generator=gen).to(dtype)
    v = torch.randn(B, Tk, Hkv, D, device=device, generator=gen).to(dtype)
    g = make_gates(B, Tk, Hq, device, gen)
    do = torch.randn(B, Tq, Hq, D, device=device, generator=gen)
    kw = dict(cu_seqlens=cu_seqlens, log_eps=log_eps)

    start = time.perf_counter()
    leaves = [t.clone().requires_grad_() for t in (q, k, v, g)]
    o = torch.full_like(q, float("nan"))
    o, stats = foxacp.forgetting_attention(*leaves, backend="triton", return_stats=True, **kw)
    o.backward(do.to(dtype))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    ref_leaves = [q.double(), k.double(), v.double(), g.clone()]
    ref_leaves = [t.requires_grad_() for t in ref_leaves]
    o_ref = foxacp.forgetting_attention(*ref_leaves, backend="reference", **kw)
    o_ref.backward(do.double())
    errs = [rel_err(o, o_ref)] + [rel_err(a.grad, b.grad) for a, b in zip(leaves, ref_leaves, strict=True)]
    seq = f"{B}x{Tq}/{Tk}" if cu_seqlens is None else "packed " + "/".join(map(str, cu_seqlens.diff().tolist()))
    del o_ref, ref_leaves
    torch.cuda.empty_cache()
    return Case(str(dtype).removeprefix("torch."), D, seq, f"{Hq}/{Hkv}", log_eps, *errs, stats.flop_saving, seconds)


def banded_reference(q, k, v, c, sm_scale: float, window: int, chunk: int = 2048) -> torch.Tensor:
    """Attention over the last ``window`` keys of each query. q, k, v (T, H, D); c (T, H) cumulative gate."""
    T = q.shape[0]
    outs = []
    for a in range(0, T, chunk):
        b, lo = min(a + chunk, T), max(0, a - window + 1)
        decay = c[a:b].t()[:, :, None] - c[lo:b].t()[:, None, :]
        s = torch.einsum("ihd,jhd->hij", q[a:b], k[lo:b]) * sm_scale + decay
        i = torch.arange(a, b, device=q.device)[:, None]
        j = torch.arange(lo, b, device=q.device)[None, :]
        s = s.masked_fill((j > i) | (j <= i - window), -torch.inf)
        outs.append(torch.einsum("hij,jhd->ihd", torch.softmax(s, -1), v[lo:b]))
    return torch.cat(outs)


def check_long(T: int, H: int, D: int, dtype, device="cuda") -> Case:
    """Forward at T tokens with fast gates (c reaches ~-1e5) against the banded float64 reference."""
    gen = torch.Generator(device=device).manual_seed(1)
    q, k, v = (torch.randn(1, T, H, D, device=device, generator=gen).to(dtype) for _ in range(3))
    g = F.logsigmoid(-1.3 + 0.5 * torch.randn(1, T, H, device=device, generator=gen)).float()
    start = time.perf_counter()
    o, stats = foxacp.forgetting_attention(q, k, v, g, backend="triton", return_stats=True)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    c = g[0].double().cumsum(0)
    ref = banded_reference(q[0].double(), k[0].double(), v[0].double(), c, D**-0.5, window=256)
    name = str(dtype).removeprefix("torch.")
    return Case(name, D, f"1x{T}/{T} fwd", f"{H}/{H}", -10.0, err_o=rel_err(o[0], ref), flop_saving=stats.flop_saving,
                seconds=seconds)  # fmt: skip


def check_huge(T: int = 2**21 + 1000, H: int = 16, D: int = 64, window: int = 4096, band: int = 256) -> Case:
    """More than 2^31 elements per tensor (32-bit offsets would wrap): forward and backward on the full
    tensor, then the last ``window`` query rows against float64 on the key slice they can see. Fast gates
    (weights beyond ``band`` keys are below e^-300) make the slice reference exact."""
    gen = torch.Generator(device="cuda").manual_seed(2)
    q, k, v = (torch.randn(1, T, H, D, device="cuda", generator=gen, dtype=torch.bfloat16) for _ in range(3))
    g = F.logsigmoid(-1.3 + 0.5 * torch.randn(1, T, H, device="cuda", generator=gen)).float()
    do = torch.zeros_like(q)
    do[:, T - window :] = torch.randn(1, window, H, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    start = time.perf_counter()
    leaves = [t.requires_grad_() for t in (q, k, v, g)]
    o, stats = foxacp.forgetting_attention(*leaves, backend="triton", return_stats=True)
    o.backward(do)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    lo = T - window - band
    ref = [t.detach()[:, lo:].double().requires_grad_() for t in (q, k, v)] + [
        g.detach()[:, lo:].clone().requires_grad_()
    ]
    o_ref = foxacp.forgetting_attention(*ref, backend="reference", log_eps=None)
    o_ref.backward(do[:, lo:].double())
    w = slice(band, None)  # rows whose keys all lie in the slice
    errs = [rel_err(o[:, T - window :], o_ref[:, w])]
    errs += [rel_err(a.grad[:, lo:][:, w], b.grad[:, w]) for a, b in zip(leaves, ref, strict=True)]
    return Case("bfloat16", D, f"1x{T}/{T} (>2^31 elements)", f"{H}/{H}", -10.0, *errs, stats.flop_saving, seconds)


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
    head = "| dtype | D | sequences | Hq/Hkv | log_eps | o | dq | dk | dv | dlogf | saving |\n" + "|---" * 11 + "|\n"
    fmt = lambda x: "-" if math.isnan(x) else f"{x:.1e}"  # noqa: E731
    body = "".join(
        f"| {r.dtype} | {r.head_dim} | {r.seq} | {r.heads} | {r.log_eps} | {fmt(r.err_o)} | {fmt(r.err_dq)} | "
        f"{fmt(r.err_dk)} | {fmt(r.err_dv)} | {fmt(r.err_dlogf)} | {r.flop_saving:.2f} |\n"
        for r in rows
    )
    return head + body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="bf16, head dim 64, up to 4k tokens")
    ap.add_argument("--long", type=int, default=65536, help="tokens of the long forward check (0: skip)")
    ap.add_argument("--out", type=Path, default=None, help="write gpu_correctness.json and .md here")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    rows = []
    for case in cases(args.quick):
        rows.append(check(**case))
        r = rows[-1]
        print(f"{r.dtype} D={r.head_dim} {r.seq} {r.heads} eps={r.log_eps}: worst {r.worst:.2e} ({r.seconds:.1f}s)")
    if args.long:
        for D in (64, 128):
            rows.append(check_long(args.long, 2, D, torch.bfloat16))
    failed = [r for r in rows if not r.worst <= TOLERANCE[getattr(torch, r.dtype)]]
    table = format_table(rows)
    header = f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton "
    import triton

    header += f"{triton.__version__}\n\n"
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_correctness.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
        (args.out / "gpu_correctness.md").write_text(header + table)
    print(header + table)
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
