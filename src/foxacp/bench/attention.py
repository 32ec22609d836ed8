"""Attention kernel benchmark: foxacp (exact and ACP) against dense attention and other FoX kernels.

    python -m foxacp.bench.attention                     # everything (see --help for subsets)
    python -m foxacp.bench.attention --quick             # 24 heads x 64, 4k and 16k, short timings

Every shape compiles FlexAttention (and autotunes fla) afresh, so the whole grid can take longer than one
10-minute GPU session: split it by head config (--configs 24x64,12x128 --tag a, then --configs 12x64,16x64
--tag b), cap each part with --time-budget (shapes past it are recorded as skipped), and join the parts
with `python -m foxacp.bench.report A/attention.json B/attention.json` (a full run's set).

Shapes: the 125M / 360M / 760M models (12, 16, 24 heads of dim 64) and 12 heads of dim 128; 32k tokens
per batch (B = 32768 // T, at least 1); bf16; contexts 4k-16k forward and forward+backward, 32k and 64k
forward only. Each time is the median of triton.testing.do_bench after a warm-up call (compilation and
autotuning happen there), and each row is timed in `--rounds` interleaved rounds (every row once per round)
whose median it reports: the GPU's clock drifts within a run, and ACP and exact are compared row to row.
Every timing follows 1 s of do_bench warm-up (`--warmup`): under sustained load an H100 holds its power cap
by lowering its clock, so after a short warm-up a row runs at whatever clock the row before it left (the
exact 16k fwd+bwd moved 15.6-18.5 ms with it, experiments/040-power-cap-clock); after 1 s every row, peers included,
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

Results go to results/<date>-<commit>-attention[-TAG]-<device>/ (attention.json, .md and a .png plot; see
`foxacp.bench.results` and `foxacp.bench.report`), are rewritten after every shape so a cut-off run keeps
what it measured, and are copied to `--out`. A run that covers only part of the grid takes a `--tag`
(`--quick` runs are tagged "quick"), so the results index never takes it for a full run.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from foxacp.testing import float64_reference, rel_err

from ..ops.acp import DEFAULT_LOG_EPS
from .gates import GateProfile, fit_log_fgate, load_log_fgate, synthetic_log_fgate
from .peers import PEERS, Inputs, Peer, Unavailable, qknorm_bound
from .report import ACP_ROW, EXACT_ROW, Row, environment, plot, summary, write_results
from .results import RESULTS_ROOT, benchmark_name, device_tag, result_dir

CONFIGS = ((12, 64), (16, 64), (24, 64), (12, 128))  # (heads, head dim): 125M, 360M, 760M, dim 128
CONTEXTS = (4096, 8192, 16384, 32768, 65536)
MAX_BWD_CONTEXT = 16384
CHECK_GRADS_UP_TO = 16384  # float64 reference with gradients: ~6 (T x T) float64 buffers per head
TOKENS_PER_BATCH = 32768
FOXACP_ROWS = (EXACT_ROW, ACP_ROW)
FOX_PEERS = (ACP_ROW, "flex-fox", "flex-fox-acp", "fla-fox")  # compared against foxacp exact


class CheckFailed(RuntimeError):
    """A foxacp row disagrees with the float64 reference."""


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
            o_ref, grads_ref = float64_reference((q, k, v, g), _head0(inp.do, h), **kw)
            ref = [o_ref, *grads_ref]
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


@dataclass(frozen=True)
class ShapeSettings:
    """What every shape of one benchmark run shares (from the command line; see ``parse_args``)."""

    tokens: int = TOKENS_PER_BATCH
    seed: int = 0
    static_qk_bound: bool = True
    log_eps: float = DEFAULT_LOG_EPS
    backend: str = "triton"
    check: bool = True
    check_window: int = 2048
    tol: float = 2e-2
    compile: bool = True
    rounds: int = 3
    device: str = "cuda"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ShapeSettings:
        """The settings of a parsed command line (``parse_args``)."""
        return cls(
            tokens=args.tokens,
            seed=args.seed,
            static_qk_bound=args.qk_bound == "static",
            log_eps=args.log_eps,
            backend=args.backend,
            check=not args.no_check,
            check_window=args.check_window,
            tol=args.tol,
            compile=not args.no_compile,
            rounds=args.rounds,
            device=args.device,
        )


def shape_inputs(heads: int, head_dim: int, seqlen: int, gates: Tensor | None, s: ShapeSettings) -> Inputs:
    """The benchmark's inputs at one shape: B = tokens // seqlen sequences, synthetic gates unless recorded
    ``gates`` (layers or batch first, see ``fit_log_fgate``) are given."""
    batch = max(1, s.tokens // seqlen)
    log_fgate = (
        synthetic_log_fgate(batch, seqlen, heads, GateProfile(), seed=s.seed)
        if gates is None
        else fit_log_fgate(gates, batch, seqlen, heads)
    )
    qk_bound = qknorm_bound(head_dim) if s.static_qk_bound else None
    device = torch.device(s.device)
    return make_inputs(
        batch, seqlen, heads, head_dim, log_fgate, qk_bound=qk_bound, log_eps=s.log_eps, device=device, seed=s.seed
    )


def check_rows(inp: Inputs, rows: dict[tuple[str, str], Row], s: ShapeSettings) -> None:
    """Check both foxacp rows (those in ``rows``) against float64 and record the worst error in each of their
    modes. Raises CheckFailed when one disagrees or its check raises."""
    names = dict.fromkeys(n for n, _ in rows)
    for name in (n for n in FOXACP_ROWS if n in names):
        log_eps = None if name == EXACT_ROW else s.log_eps
        grads = inp.q.shape[1] <= CHECK_GRADS_UP_TO
        try:
            err = check_foxacp(inp, log_eps, backend=s.backend, grads=grads, window=s.check_window, tol=s.tol)
        except CheckFailed:
            raise
        except Exception as e:
            raise CheckFailed(f"{name} check at q {tuple(inp.q.shape)} raised {_reason(e)}") from e
        for (n, _), row in rows.items():
            if n == name:
                row.ref_rel_err = err


def make_peers(inp: Inputs, rows: dict[tuple[str, str], Row], s: ShapeSettings) -> dict[str, Peer]:
    """Set up every row's implementation; a row that cannot be set up is marked skipped (a peer) or failed
    (foxacp) in all its modes instead."""
    peers: dict[str, Peer] = {}
    for name in dict.fromkeys(n for n, _ in rows):
        try:
            peers[name] = PEERS[name](inp, s.backend, s.compile)
            continue
        except Unavailable as e:
            status, note = "skipped", str(e)
        except Exception as e:  # a peer that cannot even be set up is skipped, not fatal
            status, note = ("failed" if name in FOXACP_ROWS else "skipped"), _reason(e)
        for (n, _), row in rows.items():
            if n == name:
                row.status, row.note = status, note
    return peers


def time_row(
    row: Row, peer: Peer, first_round: bool, want_output: bool, timer: Callable[..., float], s: ShapeSettings
) -> Tensor | None:
    """Time one row once (appending to its rounds). In the first round also time the ACP search and, for a
    forward row that ``want_output``, return its output (compared with foxacp exact). Errors propagate."""
    fwdbwd = row.mode == "fwdbwd"
    row.flop_saving = peer.flop_saving
    row.ms_rounds.append(timer(peer.fwdbwd if fwdbwd else peer.fwd, grad_to_none=peer.leaves if fwdbwd else None))
    row.ms = statistics.median(row.ms_rounds)
    if not first_round:
        return None
    if peer.search is not None:
        row.search_host_ms = timer(peer.search)
        row.search_ms = timer(graphed(peer.search)) if s.device == "cuda" else row.search_host_ms
    return peer.output() if want_output and not fwdbwd else None


def time_rows(
    rows: dict[tuple[str, str], Row],
    peers: dict[str, Peer],
    s: ShapeSettings,
    timer: Callable[..., float],
    out_of_time: Callable[[], bool],
    progress: Callable[..., None],
) -> None:
    """Time every row once per round, rounds one after another; each keeps the median of its rounds.

    The GPU's clock drifts within a run (a row timed 7.4 ms once and 6.2 ms a minute later, same kernels), so
    rows compared with each other (ACP against exact) are timed side by side several times. A row that raises
    is recorded (failed for foxacp, skipped for a peer) and the run goes on (OOM, compile errors, ...).
    """
    exact_out = None
    for rnd in range(s.rounds):
        for (name, mode), row in rows.items():
            progress(f"{row.config} T={row.seqlen} {mode} {name} ({rnd + 1}/{s.rounds})")
            peer = peers.get(name)
            if peer is None or row.status != "ok":
                continue
            if out_of_time():
                if not row.ms_rounds:
                    row.status, row.note = "skipped", "time budget spent"
                continue
            try:
                compare = name in FOX_PEERS and exact_out is not None
                out = time_row(row, peer, rnd == 0, name == EXACT_ROW or compare, timer, s)
                if out is not None and name == EXACT_ROW:
                    exact_out = out
                elif out is not None:
                    row.vs_exact_rel_err = rel_err(out, exact_out)
            except Exception as e:
                row.status = "failed" if name in FOXACP_ROWS else "skipped"
                row.note, row.ms = _reason(e), None
                if s.device == "cuda":
                    torch.cuda.empty_cache()


def run_shape(
    heads: int,
    head_dim: int,
    seqlen: int,
    modes: Sequence[str],
    names: Sequence[str],
    s: ShapeSettings,
    gates: Tensor | None,
    timer: Callable[..., float],
    out_of_time: Callable[[], bool],
    progress: Callable[..., None],
) -> list[Row]:
    """Check and time every selected row at one shape; returns the rows (also when a peer is skipped)."""
    batch = max(1, s.tokens // seqlen)
    rows = {(n, m): Row(n, heads, head_dim, batch, seqlen, m) for m in modes for n in names}
    if out_of_time():
        progress(f"{heads}x{head_dim} T={seqlen}: time budget spent", len(rows) * s.rounds)
        for row in rows.values():
            row.status, row.note = "skipped", "time budget spent"
        return list(rows.values())
    inp = shape_inputs(heads, head_dim, seqlen, gates, s)
    if s.check:
        check_rows(inp, rows, s)
    time_rows(rows, make_peers(inp, rows, s), s, timer, out_of_time, progress)
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
    p.add_argument("--log-eps", type=float, default=DEFAULT_LOG_EPS, help="ACP tolerance, natural log")
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
    p.add_argument("--results-dir", type=Path, default=RESULTS_ROOT, help="root of the result set folders")
    p.add_argument("--out", type=Path, help="also copy the result files here")
    p.add_argument("--tag", default="", help="names a partial run's set (attention-TAG; --quick: quick)")
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
    if args.tag and not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", args.tag):
        p.error("--tag must be lower-case letters and digits, words joined by dashes (it names the result folder)")
    return args


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

    meta = environment()
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
    # A run on recorded gates is tagged so, so that it never stands in the index for the synthetic-gate set.
    what = benchmark_name(
        "attention", args.tag, marks=("quick" if args.quick else "", "recorded" if args.gates else "")
    )
    out_dir = result_dir(what, date=meta["date"], commit=meta["commit"], device=device_tag(meta["device"]),
                         root=args.results_dir)  # fmt: skip
    settings = ShapeSettings.from_args(args)
    shapes = [(h, d, t) for h, d in args.configs for t in args.contexts]
    modes_at = {t: [m for m in args.modes if m == "fwd" or t <= args.max_bwd_context] for t in args.contexts}
    total = sum(len(modes_at[t]) * len(args.rows) for _, _, t in shapes) * args.rounds
    start = time.monotonic()
    out_of_time = lambda: bool(args.time_budget) and time.monotonic() - start > args.time_budget
    rows: list[Row] = []
    failure = ""

    def flush() -> None:
        files = write_results(rows, meta, out_dir, "attention")
        png = plot(rows, out_dir / "attention.png")
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
            rows += run_shape(heads, head_dim, seqlen, modes_at[seqlen], args.rows, settings, gates, timer, out_of_time,
                              progress)  # fmt: skip
            flush()
            if args.device == "cuda":
                torch.cuda.empty_cache()
    except CheckFailed as e:
        failure = f"REFERENCE CHECK FAILED, benchmark stopped (timings not valid): {e}"
    finally:
        bar.close()
    flush()
    print(f"\nresults: {out_dir}/attention.{{json,md,png}}" + (f" (copied to {args.out})" if args.out else ""))
    print(f"device {meta['device']}, torch {meta['torch']}, triton {meta['triton']}, commit {meta['commit']}")
    print(summary(rows))
    if failure:
        print(failure)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
