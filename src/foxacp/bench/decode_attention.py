"""Decode attention benchmark: one decoding step's attention (one new query per sequence against a full KV
cache), foxacp exact and ACP against SDPA's dense decode and the HBM floor.

    python -m foxacp.bench.decode_attention            # B 1, 8, 32 x 4k, 16k, 64k x 24x64 and 32/8x128
    python -m foxacp.bench.decode_attention --quick    # B 1, 8 x 16k, 64k, short timings (~3 min)

Shapes: 24 query/KV heads of dim 64 (the 760M model) and 32 query / 8 KV heads of dim 128 (GQA); bf16; the
cache is full (cache_seqlens = Tmax = context). q and k rows have unit RMS (QK-norm with gains 1), so the
static ACP bound U = sqrt(D) is passed as qk_bound, as a model with QK-norm does; v is standard normal.

Gates: the synthetic profile of `foxacp.bench.gates` (per-head forgetting rates, log-uniform windows), its
``max_window_factor`` fitted per (shape, context) so that ACP prunes ``--target-saving`` (70%) of the
(query, key block) pairs, labelled "synthetic spread"; with ``--profile uniform`` every head has the same
window (the same saving, evenly over the heads: splits of equal work, a check on the kernel's balance); or
gates recorded from a model (``--gates FILE``, labelled "recorded"). c is rebased to each sequence's last key,
as the model's cache keeps it.

Rows: foxacp-exact and foxacp-acp (``forgetting_attention_with_kvcache``), sdpa-cudnn and sdpa-flash
(``F.scaled_dot_product_attention`` on contiguous (B, H, T, D) copies of K and V, one query, GQA through
``enable_gqa``). Every call is captured in a CUDA graph (a decode step runs as one) and timed by
triton.testing.do_bench (median) on its replay after a long warm-up. Before timing, each foxacp row is
checked on the GPU against float64 (the PyTorch twin on the first and last sequences: on the kernel's mask,
and exact within ACP's bound); a failing row is recorded as failed and not timed.

Reported per row: ms; the bytes of K and V the row reads (ACP: the blocks kept by any query head of a KV
head's group, which is what the kernel loads); the HBM floor (those bytes / bandwidth); the share of the
measured copy bandwidth that the bytes actually read take at that time (foxacp's also count the float32 c
of each query head at every key it loads); the saving (pruned (query, block) pairs); vs cuDNN (time /
cuDNN's) and, for ACP, vs its target (time / (1.15 x (1 - saving) x exact + 10 us)).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.acp import DEFAULT_LOG_EPS
from .attention import bench_ms, graphed, rel_err
from .gates import GateProfile, fit_log_fgate, load_log_fgate, synthetic_log_fgate
from .report import ACP_SLACK, environment
from .results import benchmark_name, check_tag, device_tag, result_dir

CONFIGS = ((24, 24, 64), (32, 8, 128))  # (query heads, KV heads, head dim)
BATCHES = (1, 8, 32)
CONTEXTS = (4096, 16384, 65536)
TARGET_SAVING = 0.7
QUICK = {"batches": (1, 8), "contexts": (16384, 65536), "warmup": 200, "rep": 100}
LOG_EPS = DEFAULT_LOG_EPS
ACP_OVERHEAD_MS = 0.010  # the ACP target's allowance for the start search and the fixed cost of a launch
SDPA_BACKENDS = {"sdpa-cudnn": "CUDNN_ATTENTION", "sdpa-flash": "FLASH_ATTENTION"}
TOL = {"exact": 1e-2, "masked": 1e-2}  # bf16 output against float64, relative by norm


@dataclass
class Cache:
    """One benchmark shape: q (B, 1, Hq, D), a full cache k, v (B, T, Hkv, D), c (B, T, Hq) float32, lens."""

    q: Tensor
    k: Tensor
    v: Tensor
    c: Tensor
    lens: Tensor
    qk_bound: float
    gates: str

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        B, T, Hkv, D = self.k.shape
        return B, T, self.q.shape[2], Hkv, D


@dataclass
class Row:
    """One timing. status "ok", "failed" (reference check) or "skipped" (unavailable here), reason in note."""

    row: str
    variant: str  # foxacp rows timed at forced kernel settings ("splits=16 stages=3"); "" for the defaults
    heads_q: int
    heads_kv: int
    head_dim: int
    batch: int
    context: int
    status: str = "ok"
    ms: float | None = None
    saving: float = 0.0
    kv_bytes: int = 0
    c_bytes: int = 0  # the float32 gate sums foxacp reads next to K and V
    floor_ms: float | None = None
    hbm_share: float | None = None
    ref_rel_err: float | None = None
    note: str = ""
    derived: dict = field(default_factory=dict)

    @property
    def config(self) -> str:
        return f"{self.heads_q}/{self.heads_kv}x{self.head_dim}"


def out_dir_for(meta: dict, args: argparse.Namespace) -> Path:
    """The default results folder: results/<date>-<commit>-decode-attention[-TAG]-<device>/, TAG naming how the
    run departs from the full default one (``benchmark_name``)."""
    full = (args.batches, args.contexts, args.configs) == (list(BATCHES), list(CONTEXTS), list(CONFIGS))
    marks = (
        "quick" if args.quick else "",
        "recorded" if args.gates else "",
        "uniform" if args.profile != "spread" and not args.gates else "",
        f"saving{round(100 * args.target_saving)}" if args.target_saving != TARGET_SAVING and not args.gates else "",
        "sweep" if args.variants != [("", {})] else "",
        "partial" if not full and not args.quick else "",
    )
    what = benchmark_name("decode-attention", args.tag, marks=marks)
    return result_dir(what, date=meta["date"], commit=meta["commit"], device=device_tag(meta["device"]))


def copy_bandwidth(device: torch.device, nbytes: int = 2**30) -> float:
    """Measured device-memory bandwidth in bytes/s: a 1 GiB copy moves 2 GiB (read and write)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src), warmup=200, rep=200)
    return 2 * nbytes / (ms * 1e-3)


def _rebased_c(log_fgate: Tensor, lens: Tensor) -> Tensor:
    """Cumulative gate in float64 on the device, minus its value at each sequence's last key, as float32."""
    c = log_fgate.double().cumsum(1)
    return (c - c.gather(1, (lens.long() - 1)[:, None, None].expand(-1, 1, c.shape[2]))).float()


def _saving(c: Tensor, lens: Tensor, qk_bound: float, head_dim: int, heads_kv: int) -> float:
    from foxacp.ops.kvcache import CacheProblem, cache_stats, cache_threshold

    B, T, Hq = c.shape
    problem = CacheProblem(B, 1, T, Hq, heads_kv, head_dim, 1.0 / math.sqrt(head_dim))
    u = torch.full((B, Hq), qk_bound, dtype=torch.float64, device=c.device)
    return cache_stats(c, lens, cache_threshold(u, lens, problem, LOG_EPS), 1).flop_saving


def fit_profile(
    context: int, heads_q: int, heads_kv: int, head_dim: int, target: float, device, *, uniform: bool = False
) -> GateProfile:
    """The synthetic profile whose max_window_factor makes ACP prune ``target`` of one sequence's blocks.

    Fewer pruned blocks as the factor grows (slower forgetting): a bisection on its log, on fixed noise.
    ``uniform``: every head gets the same window (min_window = the max window), the same saving spread evenly
    over the heads instead of from 16-token windows to unpruned heads.
    """
    lens = torch.tensor([context], dtype=torch.int32, device=device)

    def profile(log_factor: float) -> GateProfile:
        factor = math.exp(log_factor)
        return GateProfile(max_window_factor=factor, min_window=factor * context if uniform else 16.0)

    lo, hi = math.log(1e-3), math.log(1e3)
    for _ in range(24):
        mid = (lo + hi) / 2
        c = _rebased_c(synthetic_log_fgate(1, context, heads_q, profile(mid), device=device), lens)
        if _saving(c, lens, math.sqrt(head_dim), head_dim, heads_kv) > target:
            lo = mid
        else:
            hi = mid
    return profile((lo + hi) / 2)


def make_cache(
    batch: int, context: int, heads_q: int, heads_kv: int, head_dim: int, log_fgate: Tensor, label: str, device
) -> Cache:
    """A full bf16 cache of one shape (built a sequence at a time to bound the float32 temporaries)."""
    gen = torch.Generator(device=device).manual_seed(0)

    def unit_rms(*shape: int) -> Tensor:
        x = torch.randn(*shape, generator=gen, device=device)
        return (x * x.pow(2).mean(-1, keepdim=True).rsqrt()).to(torch.bfloat16)

    q = unit_rms(batch, 1, heads_q, head_dim)
    k = torch.stack([unit_rms(context, heads_kv, head_dim) for _ in range(batch)])
    v = torch.randn(batch, context, heads_kv, head_dim, generator=gen, device=device, dtype=torch.bfloat16)
    lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    c = _rebased_c(fit_log_fgate(log_fgate.to(device), batch, context, heads_q), lens)
    return Cache(q, k, v, c, lens, math.sqrt(head_dim), label)


def kv_bytes_read(cache: Cache, log_eps: float | None) -> tuple[int, int, float]:
    """Bytes of K and V the kernel loads (ACP: blocks kept by any query head of a group), bytes of c it loads
    with them (float32, every query head of the group), and the saving."""
    from foxacp.ops.kvcache import DECODE_BLOCK, CacheProblem, cache_stats, cache_threshold, kept_blocks

    B, T, Hq, Hkv, D = cache.shape
    per_key = (2 * D * cache.k.element_size(), 4 * Hq // Hkv)  # K and V, c; per key and KV head
    if log_eps is None:
        return B * T * Hkv * per_key[0], B * T * Hkv * per_key[1], 0.0
    problem = CacheProblem(B, 1, T, Hq, Hkv, D, 1.0 / math.sqrt(D))
    u = torch.full((B, Hq), cache.qk_bound, dtype=torch.float64, device=cache.q.device)
    delta = cache_threshold(u, cache.lens, problem, log_eps)
    kept = kept_blocks(cache.c, cache.lens, delta, 1)[:, 0]  # (B, blocks, Hq); the cache is full: all causal
    loaded = kept.view(B, kept.shape[1], Hkv, Hq // Hkv).any(-1)  # (B, blocks, Hkv)
    keys = loaded.sum(1) * DECODE_BLOCK - (-T % DECODE_BLOCK)  # the last block, always kept, may be partial
    n = int(keys.sum())
    return n * per_key[0], n * per_key[1], cache_stats(cache.c, cache.lens, delta, 1).flop_saving


def check_foxacp(cache: Cache, log_eps: float | None, step: Callable[[], Tensor] | None = None) -> float:
    """Worst relative error (by norm) of the kernel (``step``'s output; default the public function) against
    float64 on the first and last sequences.

    Exact: against exact float64 attention. ACP: against float64 on the same mask, and against exact float64
    within the ACP bound (2 eps max|v| per element). Raises AssertionError with the numbers on failure.
    """
    from foxacp import forgetting_attention_with_kvcache
    from foxacp.ops.kvcache import CacheProblem, cache_attention_torch, cache_threshold

    B, T, Hq, Hkv, D = cache.shape
    if step is None:
        o = forgetting_attention_with_kvcache(
            cache.q, cache.k, cache.v, cache.c, cache.lens, log_eps=log_eps, qk_bound=cache.qk_bound
        )
    else:
        o = step()
    worst = 0.0
    for b in sorted({0, B - 1}):
        sl = slice(b, b + 1)
        problem = CacheProblem(1, 1, T, Hq, Hkv, D, 1.0 / math.sqrt(D))
        args = (cache.q[sl].double(), cache.k[sl].double(), cache.v[sl].double(), cache.c[sl], cache.lens[sl])
        exact = cache_attention_torch(*args, None, problem)
        if log_eps is None:
            err = rel_err(o[sl], exact)
            assert err <= TOL["exact"], f"exact: relative error {err:.2e} at sequence {b}"
        else:
            u = torch.full((1, Hq), cache.qk_bound, dtype=torch.float64, device=o.device)
            masked = cache_attention_torch(*args, cache_threshold(u, cache.lens[sl], problem, log_eps), problem)
            err = rel_err(o[sl], masked)
            assert err <= TOL["masked"], f"ACP: relative error {err:.2e} against its float64 mask at sequence {b}"
            drift = (masked - exact).abs().max().item()
            bound = 2 * math.exp(log_eps) * cache.v[sl].abs().max().item()
            assert drift <= bound, f"ACP moved the output by {drift:.2e} > its bound {bound:.2e} at sequence {b}"
        worst = max(worst, err)
        del args, exact
    return worst


Variant = tuple[str, dict[str, Any]]  # (label, kernel settings: splits, stages, schedule); ("", {}) the defaults


def foxacp_step(cache: Cache, log_eps: float | None, settings: dict[str, Any]) -> Callable[[], Tensor]:
    """One decode attention call; with ``settings`` (splits, stages, schedule), the kernel at those (sweeps)."""
    from foxacp import forgetting_attention_with_kvcache

    c = cache
    if not settings:
        return lambda: forgetting_attention_with_kvcache(
            c.q, c.k, c.v, c.c, c.lens, log_eps=log_eps, qk_bound=c.qk_bound
        )
    from foxacp.ops.kvcache import DECODE_BLOCK, check_cache_inputs, logit_bound
    from foxacp.ops.triton_decode import decode_attention

    problem = check_cache_inputs(c.q, c.k, c.v, c.c, c.lens, None, log_eps, "triton")
    acp = None if log_eps is None else (logit_bound(c.q, c.k, c.lens, problem, c.qk_bound), log_eps)
    splits, stages, schedule = (settings.get(k) for k in ("splits", "stages", "schedule"))
    return lambda: decode_attention(
        c.q, c.k, c.v, c.c, c.lens, acp, problem, DECODE_BLOCK, splits, stages, schedule=schedule
    )


def variants(
    splits: Sequence[int | None], stages: Sequence[int | None], schedules: Sequence[str | None] = (None,)
) -> list[Variant]:
    """(label, settings) for every combination; label "" and no settings for the kernel's own choice."""
    out = []
    for sp in splits:
        for st in stages:
            for sc in schedules:
                settings = {k: v for k, v in (("splits", sp), ("stages", st), ("schedule", sc)) if v is not None}
                out.append((" ".join(f"{k}={v}" for k, v in settings.items()), settings))
    return out


def sdpa_step(cache: Cache, backend: str) -> tuple[Callable[[], Tensor], int, str]:
    """SDPA's dense decode on head-first contiguous K/V (its users' layout): the step, the bytes of K and V
    it reads, and a note. GQA goes through ``enable_gqa``; a backend that refuses it gets K and V repeated to
    the query heads (more bytes). Raises RuntimeError when the backend cannot run the shape at all."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = cache.q.transpose(1, 2).contiguous()
    k, v = (x.transpose(1, 2).contiguous() for x in (cache.k, cache.v))
    choice = getattr(SDPBackend, SDPA_BACKENDS[backend])
    group = q.shape[1] // k.shape[1]
    note = ""

    def step() -> Tensor:  # reads k, v and group when it runs: the fallback below rebinds them
        with sdpa_kernel(choice):
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=group > 1)

    if group > 1:
        try:
            step()
            note = "GQA via enable_gqa"
        except RuntimeError as err:
            k, v = (x.repeat_interleave(group, dim=1) for x in (k, v))
            group, note = 1, f"K/V repeated to the query heads (enable_gqa: {str(err).splitlines()[0][:80]})"
    step()  # raises here when the backend cannot run this shape
    return step, 2 * k.numel() * k.element_size(), note


def run_shape(
    cache: Cache,
    rows: Sequence[str],
    bandwidth: float,
    timer: Callable[[Callable[[], object]], float],
    kernel_variants: Sequence[Variant] = (("", {}),),
) -> list[Row]:
    """Check and time every row at one shape (foxacp rows once per kernel variant, each checked)."""
    B, T, Hq, Hkv, D = cache.shape
    out = []
    jobs = [(name, v) for name in rows for v in (kernel_variants if name.startswith("foxacp") else [("", {})])]
    for name, (label, settings) in jobs:
        row = Row(name, label, Hq, Hkv, D, B, T, note=f"gates: {cache.gates}")
        try:
            if name.startswith("foxacp"):
                log_eps = LOG_EPS if name == "foxacp-acp" else None
                row.kv_bytes, row.c_bytes, row.saving = kv_bytes_read(cache, log_eps)
                fn = foxacp_step(cache, log_eps, settings)
                row.ref_rel_err = check_foxacp(cache, log_eps, fn)
            else:
                fn, row.kv_bytes, note = sdpa_step(cache, name)
                row.note = "; ".join(filter(None, (row.note, note)))
            row.ms = timer(graphed(fn))
        except AssertionError as err:
            row.status, row.note = "failed", f"{row.note}; {err}"
        except RuntimeError as err:
            first = (str(err).strip().splitlines() or [""])[0][:200]
            row.status, row.note = "skipped", f"{row.note}; {type(err).__name__}: {first}"
        row.floor_ms = row.kv_bytes / bandwidth * 1e3
        if row.ms:
            row.hbm_share = (row.kv_bytes + row.c_bytes) / bandwidth * 1e3 / row.ms
        out.append(row)
    return out


def derive(rows: Sequence[Row]) -> None:
    """vs cuDNN for every row, and vs the ACP target for ACP rows, from the rows of the same shape."""
    by_shape: dict[tuple, dict[tuple[str, str], Row]] = {}
    for r in rows:
        by_shape.setdefault((r.config, r.batch, r.context), {})[r.row, r.variant] = r
    for group in by_shape.values():
        cudnn = group.get(("sdpa-cudnn", ""))
        for r in group.values():
            exact = group.get(("foxacp-exact", r.variant))
            if r.ms and cudnn and cudnn.ms:
                r.derived["vs_cudnn"] = r.ms / cudnn.ms
            if r.row == "foxacp-acp" and r.ms and exact and exact.ms:
                # Decode is bound by the bytes it loads, and a GQA group loads a block any of its heads keeps:
                # the kept share is that of K/V bytes, not 1 - saving (which counts (query head, block) pairs).
                kept = r.kv_bytes / exact.kv_bytes if exact.kv_bytes else 1 - r.saving
                target = ACP_SLACK * kept * exact.ms + ACP_OVERHEAD_MS
                r.derived["acp_target_ms"] = target
                r.derived["vs_target"] = r.ms / target


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| heads | T | B | row | ms | HBM share | floor ms | saving | vs cuDNN | vs ACP target | err vs fp64 | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r.derived
        lines.append(
            f"| {r.config} | {r.context} | {r.batch} | {' '.join(filter(None, (r.row, r.variant)))} "
            f"| {_fmt(r.ms, '.4f') if r.ms else r.status} "
            f"| {_fmt(r.hbm_share, '.1%')} | {_fmt(r.floor_ms, '.4f')} | {r.saving:.1%} "
            f"| {_fmt(d.get('vs_cudnn'), '.2f')} | {_fmt(d.get('vs_target'), '.2f')} | {_fmt(r.ref_rel_err, '.1e')} "
            f"| {r.note.replace('|', '/')} |"
        )
    return lines


def write_results(rows: Sequence[Row], meta: dict, out_dir: Path) -> list[Path]:
    """decode_attention.json and decode_attention.md under out_dir (created)."""
    derive(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "decode_attention.json", out_dir / "decode_attention.md"
    json_path.write_text(json.dumps({"meta": meta, "rows": [dataclasses.asdict(r) for r in rows]}, indent=1) + "\n")
    header = [
        "# Decode attention (one query per sequence, full bf16 cache)",
        "",
        *(f"- {k}: {v}" for k, v in {**meta, **meta.get("settings", {})}.items() if k != "settings"),
        "",
        "ms: triton.testing.do_bench median of a CUDA-graph replay. HBM share: bytes the row reads (K and V, "
        "and foxacp's float32 c) / measured copy bandwidth / time. floor: bytes of K and V / bandwidth. "
        "saving: pruned (query, 64-key block) pairs. "
        f"vs ACP target: time / ({ACP_SLACK} x kept x exact + {ACP_OVERHEAD_MS * 1e3:.0f} us), kept = the "
        "share of exact's K/V bytes the row loads (a GQA group loads a block any of its heads keeps).",
        "",
    ]
    md_path.write_text("\n".join(header + table(rows)) + "\n")
    return [json_path, md_path]


def _ints(text: str) -> list[int]:
    return [int(float(x[:-1]) * 1024) if x.endswith("k") else int(x) for x in text.split(",") if x]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="B 1, 8 x 16k, 64k with short timings (~3 minutes)")
    p.add_argument("--batches", type=_ints, default=None, help="comma-separated batch sizes (default 1,8,32)")
    p.add_argument("--contexts", type=_ints, default=None, help="comma-separated contexts, e.g. 4k,16k,64k")
    p.add_argument("--configs", default=",".join(f"{h}/{kv}x{d}" for h, kv, d in CONFIGS), help="Hq/Hkv x D")
    p.add_argument("--rows", default="foxacp-exact,foxacp-acp,sdpa-cudnn,sdpa-flash")
    p.add_argument("--gates", default=None, help="recorded log forget gates (see foxacp.bench.gates)")
    p.add_argument("--layer", type=int, default=None, help="layer of a 4-d gates file")
    p.add_argument("--target-saving", type=float, default=TARGET_SAVING, help="share the synthetic profile keeps out")
    p.add_argument(
        "--profile", choices=("spread", "uniform"), default="spread",
        help="synthetic windows log-uniform over the heads (spread) or one window for every head (uniform)",
    )  # fmt: skip
    p.add_argument("--splits", type=_ints, default=None, help="time foxacp at these splits (a sweep)")
    p.add_argument("--stages", type=_ints, default=None, help="time foxacp at these pipeline depths (a sweep)")
    p.add_argument(
        "--schedules", default=None, help="time foxacp with these split schedules, comma-separated (even, balanced)"
    )
    p.add_argument("--warmup", type=int, default=1000, help="do_bench warm-up per timing, ms")
    p.add_argument("--rep", type=int, default=300, help="do_bench measuring time per timing, ms")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: results/<date>-<commit>-...)")
    p.add_argument("--tag", type=check_tag, default="", help="names the set (decode-attention-TAG); default: marks")
    args = p.parse_args(argv)
    if args.quick:
        args.batches = args.batches or list(QUICK["batches"])
        args.contexts = args.contexts or list(QUICK["contexts"])
        args.warmup, args.rep = min(args.warmup, QUICK["warmup"]), min(args.rep, QUICK["rep"])
    args.batches = args.batches or list(BATCHES)
    args.contexts = args.contexts or list(CONTEXTS)
    args.configs = [tuple(int(x) for x in re.split(r"[/x]", c)) for c in args.configs.split(",") if c]
    args.rows = [r for r in args.rows.split(",") if r]
    from foxacp.ops.triton_decode import SCHEDULES

    schedules = [x for x in (args.schedules or "").split(",") if x] or [None]
    if bad := set(schedules) - {None, *SCHEDULES}:
        p.error(f"unknown schedules {sorted(bad)}: choose from {', '.join(SCHEDULES)}")
    args.variants = variants(args.splits or [None], args.stages or [None], schedules)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the exit status is 1 when a foxacp row fails its float64 check."""
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("the decode attention benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    import foxacp

    device = torch.device("cuda")
    meta = environment()
    out_dir = args.out or out_dir_for(meta, args)
    bandwidth = copy_bandwidth(device)
    meta["settings"] = {
        "copy_bandwidth_GBps": round(bandwidth / 1e9, 1),
        "log_eps": LOG_EPS,
        "qk_bound": "sqrt(head_dim) (unit-RMS q and k rows)",
        "gates": args.gates
        or f"synthetic {args.profile}, fitted to {args.target_saving:.0%} saving per (shape, context)",
        "warmup_ms": args.warmup,
        "rep_ms": args.rep,
        "kernel variants": [v[0] or "default" for v in args.variants],
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%SZ"),
    }
    recorded = None if args.gates is None else load_log_fgate(args.gates, args.layer)
    timer = lambda fn: bench_ms(fn, warmup=args.warmup, rep=args.rep)  # noqa: E731
    checks = foxacp.set_value_checks(False)  # a decode step reads nothing back to the host
    rows: list[Row] = []
    try:
        for heads_q, heads_kv, head_dim in args.configs:
            for context in args.contexts:
                if recorded is None:
                    profile = fit_profile(context, heads_q, heads_kv, head_dim, args.target_saving, device,
                                          uniform=args.profile == "uniform")  # fmt: skip
                    gates = synthetic_log_fgate(2, context, heads_q, profile, device=device)
                    label = f"synthetic {args.profile} (max_window_factor {profile.max_window_factor:.3g})"
                else:
                    gates, label = recorded, f"recorded ({args.gates})"
                for batch in args.batches:
                    cache = make_cache(batch, context, heads_q, heads_kv, head_dim, gates, label, device)
                    rows += run_shape(cache, args.rows, bandwidth, timer, args.variants)
                    del cache
                    torch.cuda.empty_cache()
                    write_results(rows, meta, out_dir)  # a cut-off run keeps what it measured
                    print(f"done {heads_q}/{heads_kv}x{head_dim} T={context} B={batch}", file=sys.stderr, flush=True)
    finally:
        foxacp.set_value_checks(checks)
    paths = write_results(rows, meta, out_dir)
    print("results: " + ", ".join(str(p) for p in paths))
    print("\n".join(table(rows)))
    return 1 if any(r.status == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
