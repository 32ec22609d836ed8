"""Attention kernel benchmark: foxacp (exact and ACP) against dense attention and other FoX kernels.

    python -m foxacp.bench.attention                     # everything (see --help for subsets)
    python -m foxacp.bench.attention --quick             # 24 heads x 64, 4k and 16k, short timings

Every shape compiles FlexAttention (and autotunes fla) afresh, so the whole grid can take longer than one
10-minute GPU session: split it by head config (--configs 24x64,12x128 --tag a, then --configs 12x64,16x64
--tag b), cap each part with --time-budget (shapes past it are recorded as skipped), and join the parts
with `python -m foxacp.bench.report A.json B.json --stem NAME`.

Shapes: the 125M / 360M / 760M models (12, 16, 24 heads of dim 64) and 12 heads of dim 128; 32k tokens
per batch (B = 32768 // T, at least 1); bf16; contexts 4k-16k forward and forward+backward, 32k and 64k
forward only. Each time is the median of triton.testing.do_bench after a warm-up call (compilation and
autotuning happen there), and each row is timed in `--rounds` interleaved rounds (every row once per round)
whose median it reports: the GPU's clock drifts within a run, and ACP and exact are compared row to row.
Every timing follows 1 s of do_bench warm-up (`--warmup`): under sustained load an H100 holds its power cap
by lowering its clock, so after a short warm-up a row runs at whatever clock the row before it left (the
exact 16k fwd+bwd moved 15.6-18.5 ms with it, notes/kernels.md #40); after 1 s every row, peers included,
runs at its own steady clock, as in training.

Inputs: q and k rows have unit RMS (||q|| = sqrt(D)), as after QK-norm with gains 1, so the ACP logit
bound is U = sqrt(D) (`--qk-bound static`, passed to the op; `--qk-bound data` lets the op derive it
from q and k, which gives the same U on these inputs); v and the output gradient are standard normal.
Forget gates follow the synthetic profile of `foxacp.bench.gates` or come from a file (`--gates`).

Rows (`--rows`): see `foxacp.bench.peers`. Before any timing at a shape, both foxacp rows are checked
on the GPU against the float64 reference on batch element 0 and three heads (fastest, middle and slowest
forgetting): output and the gradients of q, k, v and log_fgate up to 16k, the output alone beyond (the
reference built in chunks of `--check-window` query rows). A relative error (by norm) above `--tol`, or
any NaN, stops the benchmark. FoX peers record the relative error of their output against foxacp exact.

Results go to bench/results/ (JSON, Markdown and a PNG plot; see `foxacp.bench.report`), are rewritten
after every shape so a cut-off run keeps what it measured, and are copied to `--out`.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from .gates import GateProfile, fit_log_fgate, load_log_fgate, synthetic_log_fgate
from .peers import PEERS, Inputs, Peer, Unavailable, qknorm_bound
from .report import ACP_ROW, EXACT_ROW, Row, environment, plot, summary, write_results

CONFIGS = ((12, 64), (16, 64), (24, 64), (12, 128))  # (heads, head dim): 125M, 360M, 760M, dim 128
CONTEXTS = (4096, 8192, 16384, 32768, 65536)
MAX_BWD_CONTEXT = 16384
CHECK_GRADS_UP_TO = 16384  # float64 reference with gradients: ~6 (T x T) float64 buffers per head
TOKENS_PER_BATCH = 32768
FOXACP_ROWS = (EXACT_ROW, ACP_ROW)
FOX_PEERS = (ACP_ROW, "flex-fox", "flex-fox-acp", "fla-fox")  # compared against foxacp exact


class CheckFailed(RuntimeError):
    """A foxacp row disagrees with the float64 reference."""


def rel_err(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b|| in float64; inf when either side has a NaN or inf (so NaN never passes)."""
    a, b = a.detach().double(), b.detach().double()
    err = ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
    return err if math.isfinite(err) and bool(torch.isfinite(a).all()) else math.inf


def make_inputs(
    batch: int,
    seqlen: int,
    heads: int,
    head_dim: int,
    log_fgate: Tensor,
    *,
    qk_bound: float | None,
    log_eps: float,
    device: torch.device,
    seed: int = 0,
) -> Inputs:
    """Unit-RMS q, k rows, standard normal v and output gradient (bf16), and the given gates (fp32)."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn() -> Tensor:
        return torch.randn(batch, seqlen, heads, head_dim, generator=gen, device=device)

    def unit_rms(x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True))

    leaf = lambda x: x.to(torch.bfloat16).requires_grad_()
    q, k, v = leaf(unit_rms(randn())), leaf(unit_rms(randn())), leaf(randn())
    g = log_fgate.to(device=device, dtype=torch.float32).detach().requires_grad_()
    return Inputs(q, k, v, g, randn().to(torch.bfloat16), qk_bound=qk_bound, log_eps=log_eps)


def _head0(x: Tensor, h: int) -> Tensor:
    """Float64 copy of batch element 0, head h: (1, T, 1, ...)."""
    return x[0:1, :, h : h + 1].detach().to(torch.float64)


def check_foxacp(
    inp: Inputs,
    log_eps: float | None,
    *,
    backend: str,
    grads: bool,
    window: int,
    tol: float,
) -> float:
    """Check one foxacp row (log_eps None: exact) against the float64 reference; return the worst error.

    The kernel runs at the full shape; the reference runs on float64 copies of batch element 0, one head
    at a time (heads are independent). Without `grads` (long contexts, where a dense float64 T x T would not
    fit), the reference output is built in chunks of `window` query rows, each against the keys up to its
    last row (queries align to the end of the keys); with ACP the chunk's key length enters the threshold,
    which moves the pruned set by O(eps) only. Raises CheckFailed above `tol`.
    """
    from foxacp import forgetting_attention

    _, seqlen, heads, _ = inp.q.shape
    kw = {"log_eps": log_eps, "qk_bound": inp.qk_bound}
    if grads:
        out = forgetting_attention(inp.q, inp.k, inp.v, inp.log_fgate, backend=backend, **kw)
        kernel = [out, *torch.autograd.grad(out, inp.leaves, inp.do)]
    else:
        with torch.no_grad():
            kernel = [forgetting_attention(inp.q, inp.k, inp.v, inp.log_fgate, backend=backend, **kw)]
    names = ("o", "dq", "dk", "dv", "dlog_fgate")
    worst, report = 0.0, []
    for h in sorted({0, heads // 2, heads - 1}):
        q, k, v, g = (_head0(x, h) for x in inp.leaves)
        if grads:
            ref_in = [x.requires_grad_() for x in (q, k, v, g)]
            o_ref = forgetting_attention(*ref_in, backend="reference", **kw)
            ref = [o_ref, *torch.autograd.grad(o_ref, ref_in, _head0(inp.do, h))]
        else:
            with torch.no_grad():
                chunks = [
                    forgetting_attention(
                        q[:, i : i + window], *(x[:, : i + window] for x in (k, v, g)), backend="reference", **kw
                    )
                    for i in range(0, seqlen, window)
                ]
            ref = [torch.cat(chunks, dim=1)]
        for name, a, b in zip(names, kernel, ref, strict=False):
            err = rel_err(a[0:1, :, h : h + 1], b)
            worst = max(worst, err)
            report.append(f"{name}[head {h}] {err:.2e}")
        del ref
    if not worst <= tol:
        what = "exact" if log_eps is None else f"ACP log_eps={log_eps}"
        raise CheckFailed(
            f"foxacp {what} disagrees with the float64 reference at q {tuple(inp.q.shape)} "
            f"(tolerance {tol:.0e}): " + ", ".join(report)
        )
    return worst


def bench_ms(fn: Callable[[], object], *, warmup: int, rep: int, grad_to_none=None) -> float:
    """Median ms of fn by triton.testing.do_bench, after one untimed call (compilation, autotuning)."""
    import triton.testing

    fn()
    torch.cuda.synchronize()
    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grad_to_none, return_mode="median"))


def graphed(fn: Callable[[], object]) -> Callable[[], object]:
    """fn captured in a CUDA graph: its replay times the device work alone, without Python launch overhead.
    Falls back to fn itself when it cannot be captured (e.g. it synchronises)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()  # warm up outside the capture (compilation, allocator)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError:
        return fn
    return graph.replay


def _reason(err: BaseException) -> str:
    first = str(err).strip().splitlines()
    return f"{type(err).__name__}: {first[0][:200] if first else ''}"


def run_shape(
    heads: int,
    head_dim: int,
    seqlen: int,
    modes: Sequence[str],
    names: Sequence[str],
    args: argparse.Namespace,
    gates: Tensor | None,
    timer: Callable[..., float],
    out_of_time: Callable[[], bool],
    progress: Callable[..., None],
) -> list[Row]:
    """Check and time every selected row at one shape; returns the rows (also when a peer is skipped)."""
    batch = max(1, args.tokens // seqlen)
    if out_of_time():
        progress(f"{heads}x{head_dim} T={seqlen}: time budget spent", len(modes) * len(names) * args.rounds)
        note = {"status": "skipped", "note": "time budget spent"}
        return [Row(n, heads, head_dim, batch, seqlen, m, **note) for m in modes for n in names]
    device = torch.device(args.device)
    log_fgate = (
        synthetic_log_fgate(batch, seqlen, heads, GateProfile(), seed=args.seed)
        if gates is None
        else fit_log_fgate(gates, batch, seqlen, heads)
    )
    qk_bound = qknorm_bound(head_dim) if args.qk_bound == "static" else None
    inp = make_inputs(
        batch,
        seqlen,
        heads,
        head_dim,
        log_fgate,
        qk_bound=qk_bound,
        log_eps=args.log_eps,
        device=device,
        seed=args.seed,
    )
    rows = {(n, m): Row(n, heads, head_dim, batch, seqlen, m) for m in modes for n in names}

    def mark(name: str, status: str, note: str) -> None:
        for m in modes:
            rows[name, m].status, rows[name, m].note = status, note

    if not args.no_check:
        for name in (n for n in FOXACP_ROWS if n in names):
            log_eps = None if name == EXACT_ROW else args.log_eps
            try:
                err = check_foxacp(
                    inp,
                    log_eps,
                    backend=args.backend,
                    grads=seqlen <= CHECK_GRADS_UP_TO,
                    window=args.check_window,
                    tol=args.tol,
                )
            except CheckFailed:
                raise
            except Exception as e:
                raise CheckFailed(f"{name} check at q {tuple(inp.q.shape)} raised {_reason(e)}") from e
            for m in modes:
                rows[name, m].ref_rel_err = err

    peers: dict[str, Peer] = {}
    for name in names:
        try:
            peers[name] = PEERS[name](inp, args.backend, not args.no_compile)
        except Unavailable as e:
            mark(name, "skipped", str(e))
        except Exception as e:  # a peer that cannot even be set up is skipped, not fatal
            status = "failed" if name in FOXACP_ROWS else "skipped"
            mark(name, status, _reason(e))

    # Rounds: every row is timed once per round, rounds one after another, and keeps the median. The GPU's
    # clock drifts within a run (a row timed 7.4 ms once and 6.2 ms a minute later, same kernels), so rows
    # compared with each other (ACP against exact) are timed side by side several times.
    exact_out = None
    for rnd in range(args.rounds):
        for mode in modes:
            for name in names:
                row, peer = rows[name, mode], peers.get(name)
                progress(f"{heads}x{head_dim} T={seqlen} {mode} {name} ({rnd + 1}/{args.rounds})")
                if peer is None or row.status != "ok":
                    continue
                if out_of_time():
                    if not row.ms_rounds:
                        row.status, row.note = "skipped", "time budget spent"
                    continue
                row.flop_saving = peer.flop_saving
                fwdbwd = mode == "fwdbwd"
                try:
                    fn = peer.fwdbwd if fwdbwd else peer.fwd
                    row.ms_rounds.append(timer(fn, grad_to_none=peer.leaves if fwdbwd else None))
                    row.ms = statistics.median(row.ms_rounds)
                    if rnd > 0:
                        continue
                    if peer.search is not None:
                        row.search_host_ms = timer(peer.search)
                        row.search_ms = timer(graphed(peer.search)) if args.device == "cuda" else row.search_host_ms
                    if not fwdbwd and name == EXACT_ROW:
                        exact_out = peer.output()
                    if not fwdbwd and name in FOX_PEERS and exact_out is not None:
                        row.vs_exact_rel_err = rel_err(peer.output(), exact_out)
                except Exception as e:  # record and go on (OOM, compile errors, ...)
                    row.status = "failed" if name in FOXACP_ROWS else "skipped"
                    row.note, row.ms = _reason(e), None
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
    return list(rows.values())


def _sizes(text: str) -> list[int]:
    """ "4k,8192,16K" -> [4096, 8192, 16384]."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\d+)([kK]?)", part)
        if not m:
            raise argparse.ArgumentTypeError(f"bad size {part!r}")
        out.append(int(m.group(1)) * (1024 if m.group(2) else 1))
    return out


def _configs(text: str) -> list[tuple[int, int]]:
    """ "24x64,12x128" -> [(24, 64), (12, 128)]."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\d+)x(\d+)", part)
        if not m:
            raise argparse.ArgumentTypeError(f"bad head config {part!r}; expected HEADSxDIM")
        out.append((int(m.group(1)), int(m.group(2))))
    return out


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown rows {unknown}; choose from {list(PEERS)}")
    return [n for n in PEERS if n in names]  # report order


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m foxacp.bench.attention",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--configs", type=_configs, default=list(CONFIGS), help="heads x head dim, e.g. 24x64,12x128")
    p.add_argument("--heads", type=_sizes, help="keep head configs with these head counts (12,16,24)")
    p.add_argument("--head-dim", type=_sizes, help="keep head configs with these head dims (64,128)")
    p.add_argument("--contexts", type=_sizes, default=list(CONTEXTS), help="e.g. 4k,8k,16k")
    p.add_argument("--rows", type=_names, default=list(PEERS), help=f"from {','.join(PEERS)}")
    p.add_argument("--modes", default="fwd,fwdbwd", help="fwd and/or fwdbwd")
    p.add_argument(
        "--max-bwd-context",
        type=int,
        default=MAX_BWD_CONTEXT,
        help="fwdbwd only up to this context",
    )
    p.add_argument("--quick", action="store_true", help="24x64, 4k and 16k, short timings")
    p.add_argument("--gates", type=Path, help="recorded log forget gates (.pt/.safetensors)")
    p.add_argument("--layer", type=int, default=None, help="layer of a (layers, B, T, H) gate file")
    p.add_argument("--qk-bound", choices=("static", "data"), default="static")
    p.add_argument("--log-eps", type=float, default=-10.0, help="ACP tolerance, natural log")
    p.add_argument("--tokens", type=int, default=TOKENS_PER_BATCH, help="tokens per batch")
    p.add_argument("--tol", type=float, default=2e-2, help="relative error allowed vs float64")
    p.add_argument("--check-window", type=int, default=2048, help="query rows per reference chunk beyond 16k")
    p.add_argument("--no-check", action="store_true", help="skip the reference checks (not for results)")
    p.add_argument("--no-compile", action="store_true", help="FlexAttention without torch.compile")
    p.add_argument("--backend", default="triton", help="foxacp backend for its rows")
    p.add_argument("--warmup", type=int, default=1000, help="do_bench warm-up, ms (see the module docstring)")
    p.add_argument("--rep", type=int, default=100, help="do_bench measuring time, ms")
    p.add_argument("--rounds", type=int, default=3, help="time every row this often, interleaved; keep the median")
    p.add_argument("--time-budget", type=float, default=0.0, help="seconds; 0 = none")
    p.add_argument("--results-dir", type=Path, default=Path("bench/results"))
    p.add_argument("--out", type=Path, help="also copy the result files here")
    p.add_argument("--tag", default="", help="suffix for the result file names")
    p.add_argument("--commit", help="commit to record where the tree has no .git (a copied work tree)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--value-checks", action="store_true", help="keep foxacp's gate value checks on (a host sync per call)"
    )
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    if args.quick:
        args.heads, args.head_dim = args.heads or [24], args.head_dim or [64]
        if args.contexts == list(CONTEXTS):
            args.contexts = [4096, 16384]
        args.warmup, args.rep = min(args.warmup, 10), min(args.rep, 40)
    args.modes = [m for m in ("fwd", "fwdbwd") if m in args.modes.split(",")]
    args.configs = [
        (h, d)
        for h, d in args.configs
        if (not args.heads or h in args.heads) and (not args.head_dim or d in args.head_dim)
    ]
    if not args.configs:
        p.error("--configs/--heads/--head-dim select no head config")
    if not args.modes:
        p.error("--modes must name fwd and/or fwdbwd")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def _stem(meta: dict, tag: str) -> str:
    device = re.sub(r"[^a-z0-9]+", "-", meta["device"].lower()).strip("-")
    date = meta["date"].replace("-", "").replace(":", "")
    return "-".join(filter(None, ("attention", device, date, tag)))


def main(argv: Sequence[str] | None = None, timer: Callable[..., float] | None = None) -> int:
    """Run the benchmark; returns the exit status (1 when a reference check fails)."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("the attention benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    if timer is None:
        timer = lambda fn, grad_to_none=None: bench_ms(fn, warmup=args.warmup, rep=args.rep, grad_to_none=grad_to_none)
    gates = None if args.gates is None else load_log_fgate(args.gates, args.layer)
    import foxacp

    checks = foxacp.set_value_checks(args.value_checks)
    try:
        return _run(args, timer, gates)
    finally:
        foxacp.set_value_checks(checks)


def _run(args: argparse.Namespace, timer: Callable[..., float], gates: Tensor | None) -> int:
    from tqdm import tqdm

    meta = environment(Path.cwd())
    if args.commit:
        meta["commit"] = f"{args.commit} (given; git here says {meta['commit']})"
    meta["settings"] = {
        "tokens per batch": args.tokens,
        "dtype": "bf16",
        "log_eps": args.log_eps,
        "qk_bound": "sqrt(head_dim), static" if args.qk_bound == "static" else "from data",
        "gates": (
            GateProfile().describe()
            if gates is None
            else f"{args.gates} layer {args.layer or 0}, shape {tuple(gates.shape)}, tiled/cropped"
        ),
        "do_bench": f"warmup {args.warmup} ms, rep {args.rep} ms, median; median of {args.rounds} interleaved rounds",
        "checks": "off" if args.no_check else f"float64 reference, tol {args.tol}",
        "gate value checks": "on (one host sync per call)" if args.value_checks else "off (as in the trainer)",
    }
    stem = _stem(meta, args.tag)
    shapes = [(h, d, t) for h, d in args.configs for t in args.contexts]
    modes_at = {t: [m for m in args.modes if m == "fwd" or t <= args.max_bwd_context] for t in args.contexts}
    total = sum(len(modes_at[t]) * len(args.rows) for _, _, t in shapes) * args.rounds
    start = time.monotonic()
    out_of_time = lambda: bool(args.time_budget) and time.monotonic() - start > args.time_budget
    rows: list[Row] = []
    failure = ""

    def flush() -> None:
        files = write_results(rows, meta, args.results_dir, stem)
        png = plot(rows, args.results_dir / f"{stem}.png")
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            for f in [*files, png]:
                if f is not None:
                    shutil.copy2(f, args.out / f.name)

    bar = tqdm(total=total, mininterval=10.0, file=sys.stderr, desc="attention bench")

    def progress(desc: str, steps: int = 1) -> None:
        bar.set_postfix_str(desc, refresh=False)
        bar.update(steps)

    try:
        for heads, head_dim, seqlen in shapes:
            if not modes_at[seqlen]:
                continue
            torch._dynamo.reset()  # shapes never repeat: drop old graphs, stay clear of the recompile limit
            rows += run_shape(
                heads,
                head_dim,
                seqlen,
                modes_at[seqlen],
                args.rows,
                args,
                gates,
                timer,
                out_of_time,
                progress,
            )
            flush()
            if args.device == "cuda":
                torch.cuda.empty_cache()
    except CheckFailed as e:
        failure = f"REFERENCE CHECK FAILED, benchmark stopped (timings not valid): {e}"
    finally:
        bar.close()
    flush()
    print(f"\nresults: {args.results_dir / stem}.{{json,md,png}}" + (f" (copied to {args.out})" if args.out else ""))
    print(f"device {meta['device']}, torch {meta['torch']}, triton {meta['triton']}, commit {meta['commit']}")
    print(summary(rows))
    if failure:
        print(failure)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
