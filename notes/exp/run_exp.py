"""One device call: check and time kernel variants side by side (notes/kernels.md, attempts 9-11).

Variants are wrapper modules with the interface of ``foxacp.ops.triton_op.triton_attention``:
  base  - kernels and wrapper of caf5194 (pointer loads), the last benchmarked version;
  new   - src (tensor-descriptor loads of K/V in the forward; every grid heads-fastest, heavy blocks first);
  fused - a dK/dV kernel that also accumulates dQ (no dQ kernel); not run since attempts 10-11 (notes).
Each (variant, blocks) is first compared with a float64 reference on small packed GQA problems of odd
lengths, then timed (median of do_bench) at 24 heads x 64, bf16, 32k tokens. Prints a table last and
writes JSON lines to $OUT/exp.jsonl as it goes.

    PYTHONPATH=src python notes/exp/run_exp.py        (EXP_SMOKE=1 TRITON_INTERPRET=1: toy sizes on CPU)
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import astuple
from pathlib import Path

import torch
import triton.testing

sys.path.insert(0, str(Path(__file__).parent))
import op_base  # noqa: E402
import op_fused  # noqa: E402
import op_tma_dkdv  # noqa: E402
import op_tma_dq  # noqa: E402

from foxacp import forgetting_attention  # noqa: E402
from foxacp.bench.gates import GateProfile, synthetic_log_fgate  # noqa: E402
from foxacp.ops import triton_op as op_new  # noqa: E402
from foxacp.ops.attention import _plan  # noqa: E402
from foxacp.ops.config import Blocks, KernelConfig, kernel_config  # noqa: E402
from foxacp.ops.gate import cumulative_gate  # noqa: E402
from foxacp.ops.validate import check_inputs, set_value_checks  # noqa: E402

MODS = {"base": op_base, "new": op_new, "fused": op_fused, "tmadkdv": op_tma_dkdv, "tmadq": op_tma_dq}
SMOKE = os.environ.get("EXP_SMOKE") == "1"  # CPU interpreter run of the whole script at toy sizes
DEV = "cpu" if SMOKE else "cuda"
DT = torch.float16 if SMOKE else torch.bfloat16
TOKENS, HEADS = (512, 2) if SMOKE else (32768, 24)
TS = (256, 128, 128) if SMOKE else (16384, 8192, 4096)
OUT = Path(os.environ.get("OUT", "/tmp/exp_out"))
OUT.mkdir(parents=True, exist_ok=True)
LOG = OUT / "exp.jsonl"
ROWS: list[dict] = []


def log(**row) -> None:
    ROWS.append(row)
    with LOG.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def call(mod, leaves, log_eps, cfg, cu_seqlens=None):
    """The op through one wrapper module: validation, gate scan and plan as in forgetting_attention."""
    q, k, v, g = leaves
    problem = check_inputs(q, k, v, g, None, cu_seqlens, None, log_eps, "triton")
    qp, kp, vp = (t.reshape(-1, *t.shape[2:]) for t in (q, k, v))
    c_t = cumulative_gate(g.reshape(-1, problem.heads_q), problem.cu_k, problem.uniform, problem.num_seqs)
    plan = None if log_eps is None else _plan(qp, kp, c_t, problem, log_eps, None, cfg.tile_m, cfg.tile_n)
    return mod.triton_attention(qp, kp, vp, c_t, problem, plan, cfg).view(q.shape)


def rel(a, b) -> float:
    a, b = a.double(), b.double()
    return math.inf if not torch.isfinite(a).all() else ((a - b).norm() / b.norm()).item()


def inputs(B, T, Hq, Hkv, D, seed, requires_grad=True):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    r = lambda h: torch.randn(B, T, h, D, device=DEV, generator=gen)
    unit = lambda x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True))
    q, k, v = unit(r(Hq)).to(DT), unit(r(Hkv)).to(DT), r(Hkv).to(DT)
    g = synthetic_log_fgate(B, T, Hq, GateProfile(), seed=seed, device=DEV)
    leaves = [t.requires_grad_(requires_grad) for t in (q, k, v, g)]
    return leaves, r(Hq).to(DT)


def short(cfg: KernelConfig) -> str:
    f = lambda b: f"{b.block_m}x{b.block_n}w{b.num_warps}s{b.num_stages}"
    return f"fwd {f(cfg.fwd)}g{cfg.fwd.head_group} dkdv {f(cfg.dkdv)}g{cfg.dkdv.head_group} dq {f(cfg.dq)}g{cfg.dq.head_group}"


def check(name, cfg) -> float:
    """Worst relative error of o and all grads vs float64, over packed GQA problems of odd lengths."""
    worst = 0.0
    lens = [1, 70, 129, 131] if SMOKE else [1, 700, 129, 1531]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEV)
    for log_eps in (None, -10.0):
        for cu_seqlens, (B, T) in ((None, (2, 100 if SMOKE else 1000)), (cu, (1, sum(lens)))):
            leaves, do = inputs(B, T, 8, 2, 64, seed=len(ROWS) + 7)
            o = call(MODS[name], leaves, log_eps, cfg, cu_seqlens)
            got = [o, *torch.autograd.grad(o, leaves, do)]
            ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
            o_ref = forgetting_attention(*ref_leaves, cu_seqlens=cu_seqlens, log_eps=log_eps, backend="reference")
            ref = [o_ref, *torch.autograd.grad(o_ref, ref_leaves, do.double())]
            worst = max(worst, *(rel(a, b) for a, b in zip(got, ref, strict=True)))
    return worst


def ms(fn, grad_to_none=None) -> float:
    fn()
    if SMOKE:
        t0 = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - t0)
    torch.cuda.synchronize()
    return float(triton.testing.do_bench(fn, warmup=10, rep=40, grad_to_none=grad_to_none, return_mode="median"))


def time_variant(name, cfg, T, mode, log_eps, tag, heads=HEADS, dim=64) -> float:
    B = TOKENS // T
    leaves, do = inputs(B, T, heads, heads, dim, seed=1)
    mod = MODS[name]
    if mode == "fwd":
        with torch.no_grad():
            t = ms(lambda: call(mod, leaves, log_eps, cfg))
    else:
        t = ms(lambda: call(mod, leaves, log_eps, cfg).backward(do), grad_to_none=leaves)
    log(
        kind="time",
        tag=tag,
        variant=name,
        cfg=short(cfg),
        T=T,
        mode=mode,
        acp=log_eps is not None,
        ms=t,
        heads=heads,
        dim=dim,
    )
    return t


def sdpa(T, mode) -> float:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if SMOKE:
        return math.nan
    B = TOKENS // T
    q, k, v = (torch.randn(B, HEADS, T, 64, device=DEV, dtype=DT, requires_grad=True) for _ in range(3))
    do = torch.randn_like(q)
    f = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        if mode == "fwd":
            with torch.no_grad():
                t = ms(f)
        else:
            t = ms(lambda: f().backward(do), grad_to_none=[q, k, v])
    log(kind="time", tag="cudnn", variant="cudnn", cfg="", T=T, mode=mode, acp=False, ms=t)
    return t


def profile(cfg) -> None:
    """Device time per kernel of one fwd+bwd call (torch.profiler), exact and ACP, at 16k and 4k."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    for T in (TS[0], TS[2]):
        for log_eps in (None, -10.0):
            leaves, do = inputs(TOKENS // T, T, HEADS, HEADS, 64, seed=1)
            step = lambda: call(op_new, leaves, log_eps, cfg).backward(do)
            step()
            torch.cuda.synchronize()
            with prof(activities=[ProfilerActivity.CUDA]) as p:
                for _ in range(5):
                    step()
                torch.cuda.synchronize()
            rows = [(e.key, e.device_time_total / 5e3) for e in p.key_averages() if e.device_time_total > 0]
            rows.sort(key=lambda r: -r[1])
            total = sum(t for _, t in rows)
            log(
                kind="profile",
                T=T,
                acp=log_eps is not None,
                total_ms=total,
                kernels={k[:60]: round(t, 4) for k, t in rows[:12]},
            )


def cfg_with(base: KernelConfig, **blocks) -> KernelConfig:
    parts = {n: getattr(base, n) for n in ("fwd", "dkdv", "dq")}
    parts.update({n: Blocks(*b) for n, b in blocks.items()})
    return KernelConfig(base.tile_m, base.tile_n, **parts)


def main() -> None:
    set_value_checks(False)
    torch.backends.cuda.matmul.allow_tf32 = False
    cur = kernel_config(torch.device(DEV), 64)
    if SMOKE:  # the interpreter's 64 grid; blocks below must divide it
        cur = KernelConfig(64, 64, Blocks(64, 64), Blocks(32, 64), Blocks(64, 32))
    print("table config:", cur, flush=True)
    start = time.time()
    results = {}

    def run(name, cfg, T, mode, acp, tag, heads=HEADS, dim=64):
        key = (name, short(cfg), T, mode, acp, heads, dim)
        if key not in results:
            results[key] = time_variant(name, cfg, T, mode, -10.0 if acp else None, tag, heads, dim)
        return results[key]

    def checked(name, cfg) -> bool:
        err = check(name, cfg)
        log(kind="check", variant=name, cfg=short(cfg), worst_rel_err=err)
        return err < 2e-2

    for T in (TS[0], TS[2]):
        for mode in ("fwd", "fwdbwd"):
            sdpa(T, mode)
    # The table config, then dQ reading K and V through tensor descriptors.
    assert checked("new", cur), "new failed its float64 check"
    for T in (TS[0], TS[2]):
        for mode in ("fwd", "fwdbwd"):
            for acp in (False, True):
                run("new", cur, T, mode, acp, "table")
    dq_opts = [astuple(cur.dq), (64, 64, 4, 3, 4), (128, 64, 4, 3, 4), (64, 64, 4, 2, 4)]
    if SMOKE:
        dq_opts = [astuple(cur.dq)]
    assert checked("tmadq", cur), "tmadq failed its float64 check"
    for b in dq_opts:
        for acp in (False, True):
            run("tmadq", cfg_with(cur, dq=b), TS[0], "fwdbwd", acp, "tma-dq")
    # Head dim 128 (12 heads): the table's blocks against neighbours, one kernel at a time.
    c128 = kernel_config(torch.device(DEV), 128)
    if not SMOKE:
        sweeps = {
            "fwd": [(128, 64, 8, 3, 16), (128, 64, 8, 2, 16), (64, 64, 4, 2, 16)],
            "dkdv": [(64, 64, 8, 2, 4), (32, 64, 4, 2, 4)],
            "dq": [(128, 64, 8, 2, 4), (64, 64, 4, 2, 4)],
        }
        for kernel, opts in sweeps.items():
            mode = "fwd" if kernel == "fwd" else "fwdbwd"
            for b in [astuple(getattr(c128, kernel)), *opts]:
                run("new", cfg_with(c128, **{kernel: b}), TS[0], mode, False, f"d128-{kernel}", 12, 128)
    print(f"\n[{time.time() - start:.0f}s] ms ({HEADS}x64, {DT}, {TOKENS} tokens, {DEV}), vs cuDNN in brackets")
    cud = {(r["T"], r["mode"]): r["ms"] for r in ROWS if r.get("variant") == "cudnn"}
    for r in ROWS:
        if r["kind"] == "profile":
            top = ", ".join(f"{k.split('(')[0][:28]} {t:.3f}" for k, t in list(r["kernels"].items())[:7])
            print(f"profile T={r['T']} acp={int(r['acp'])} total {r['total_ms']:.3f} ms: {top}")
    for r in ROWS:
        if r["kind"] == "check":
            print(f"check {r['variant']:6s} {r['cfg']}: {r['worst_rel_err']:.2e}")
    for r in ROWS:
        if r["kind"] == "time" and r["variant"] != "cudnn":
            c = cud.get((r["T"], r["mode"]), math.nan)
            print(
                f"{r['tag']:11s} {r['variant']:5s} T={r['T']:5d} {r['mode']:6s} acp={int(r['acp'])} "
                f"{r['ms']:7.3f} [{r['ms'] / c:.2f}] {r['cfg'] if r['tag'] != 'table' else ''}"
            )
    for (T, mode), t in sorted(cud.items()):
        print(f"cudnn T={T} {mode}: {t:.3f}")


if __name__ == "__main__":
    main()
