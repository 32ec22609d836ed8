"""Result rows, FLOP accounting and the result files of the attention benchmark.

FLOP convention (FlashAttention's): causal attention forward = two matmuls of 2*T*T*D each per (batch,
head), halved for the causal mask, i.e. 4 * B * H * T**2 * D / 2; the backward costs 2.5x the forward
(five matmuls instead of two), so forward + backward = 3.5x the forward. Softmax, the gate bias and other
elementwise work are not counted. "Dense causal equivalent" TFLOP/s divides these FLOPs by the time for
every row; "visited" TFLOP/s counts only the tiles a pruned kernel visits: dense FLOPs * (1 - saving).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from foxacp.io import REPO, git_commit

from .results import RESULTS_ROOT, device_tag, result_dir

MODES = ("fwd", "fwdbwd")
BWD_OVER_FWD = 2.5
BASELINE_ROW = "sdpa-cudnn"
ACP_ROW, EXACT_ROW = "foxacp-acp", "foxacp-exact"
ACP_SLACK = 1.15  # the ACP time target: at most 1.15 x (1 - saving) x the exact time, plus the search


def causal_attention_flops(batch: int, heads: int, seqlen: int, head_dim: int, mode: str) -> float:
    """FLOPs of dense causal attention under the convention of the module docstring.

    mode "fwd" or "fwdbwd"; raises ValueError otherwise.
    """
    fwd = 4.0 * batch * heads * seqlen * seqlen * head_dim / 2
    if mode == "fwd":
        return fwd
    if mode == "fwdbwd":
        return fwd * (1.0 + BWD_OVER_FWD)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def tflops(flops: float, ms: float) -> float:
    """Throughput in TFLOP/s of `flops` done in `ms` milliseconds."""
    return flops / (ms * 1e-3) / 1e12


@dataclass
class Row:
    """One measurement: a row (implementation) at one shape and mode.

    status: "ok", "skipped" (peer unavailable or over the time budget; reason in note) or "failed".
    flop_saving: fraction of causal tiles not visited (0 for dense rows, None where unknown).
    ms: the median of ms_rounds, the row's do_bench medians in interleaved rounds.
    search_ms: device time of the boundary search alone (ACP rows; CUDA-graph replay), else None.
    search_host_ms: the same search called eagerly (includes Python and launch overhead on the host).
    ref_rel_err: foxacp rows: the worst relative error against the float64 reference at this shape.
    vs_exact_rel_err: FoX peers, fwd: relative error of the output against foxacp exact.
    """

    row: str
    heads: int
    head_dim: int
    batch: int
    seqlen: int
    mode: str
    status: str = "ok"
    ms: float | None = None
    ms_rounds: list[float] = field(default_factory=list)
    flop_saving: float | None = None
    search_ms: float | None = None
    search_host_ms: float | None = None
    ref_rel_err: float | None = None
    vs_exact_rel_err: float | None = None
    note: str = ""
    derived: dict = field(default_factory=dict)

    @property
    def config(self) -> str:
        return f"{self.heads}x{self.head_dim}"

    @property
    def key(self) -> tuple:
        return (self.heads, self.head_dim, self.seqlen, self.mode)


def derive(rows: Sequence[Row]) -> None:
    """Fill each row's `derived` dict: dense FLOPs, both TFLOP/s, search share, ratio to cuDNN, and for ACP
    rows the ratio to their time bound, ACP_SLACK x (1 - saving) x exact time + search (<= 1 meets it)."""
    baseline = {r.key: r.ms for r in rows if r.row == BASELINE_ROW and r.status == "ok"}
    exact = {r.key: r.ms for r in rows if r.row == EXACT_ROW and r.status == "ok"}
    for r in rows:
        flops = causal_attention_flops(r.batch, r.heads, r.seqlen, r.head_dim, r.mode)
        d = {"flops_dense_causal": flops}
        if r.status == "ok" and r.ms:
            d["tflops_dense_equiv"] = tflops(flops, r.ms)
            if r.flop_saving is not None:
                d["tflops_visited"] = tflops(flops * (1.0 - r.flop_saving), r.ms)
            if r.search_ms is not None:
                d["search_share"] = r.search_ms / r.ms
            if baseline.get(r.key):
                d["vs_cudnn"] = r.ms / baseline[r.key]
            if r.row == ACP_ROW and exact.get(r.key) and r.flop_saving is not None:
                d["vs_bound"] = r.ms / (ACP_SLACK * (1 - r.flop_saving) * exact[r.key] + (r.search_ms or 0.0))
        r.derived = d


def environment(repo: Path = REPO, device: str | None = None) -> dict:
    """Device (``device``, the one the run used: "cpu" for a CPU run on a GPU host; the current GPU by default),
    software versions, UTC date and git commit of this run (of the checkout foxacp runs from, not of the working
    directory)."""
    import torch
    import triton

    cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    meta = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(repo),
    }
    try:
        import fla

        meta["fla"] = getattr(fla, "__version__", "unknown")
    except Exception:  # any import failure just means "not installed"
        meta["fla"] = None
    return meta


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def markdown(rows: Sequence[Row], meta: dict) -> str:
    """The Markdown report: a header naming device, versions, date and commit, then one table."""
    lines = [
        "# Attention benchmark",
        "",
        f"- device: {meta['device']}",
        f"- torch {meta['torch']}, Triton {meta['triton']}, CUDA {meta.get('cuda')}, "
        f"cuDNN {meta.get('cudnn')}, fla {meta.get('fla')}",
        f"- date: {meta['date']}",
        f"- commit: {meta['commit']}",
    ]
    lines += [f"- {k}: {v}" for k, v in meta.get("settings", {}).items()]
    lines += [
        "",
        "ms: median of triton.testing.do_bench, then the median over interleaved rounds (every row once per "
        "round). FLOPs: causal, fwd = 4*B*H*T^2*D/2, fwd+bwd = 3.5x fwd. "
        "TFLOP/s visited = dense causal FLOPs x (1 - saving) / time. search: device time of the boundary "
        "search (CUDA-graph replay) as a share of the row's time; the eager call's host time is in the JSON "
        "(search_host_ms). vs cuDNN: time / dense causal cuDNN time (< 1 is faster). vs bound (ACP): time / "
        f"({ACP_SLACK} x (1 - saving) x foxacp exact time + search), <= 1 where the time falls with the work kept.",
        "",
        "| heads x dim | T | B | mode | row | ms | FLOP saving | TFLOP/s visited "
        "| TFLOP/s dense equiv. | search | vs cuDNN | vs bound | err vs fp64 ref | err vs exact | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r.derived
        ms = _fmt(r.ms, ".3f") if r.status == "ok" else r.status
        lines.append(
            f"| {r.config} | {r.seqlen} | {r.batch} | {r.mode} | {r.row} | {ms} "
            f"| {_fmt(r.flop_saving if r.status == 'ok' else None, '.1%')} | {_fmt(d.get('tflops_visited'), '.1f')} "
            f"| {_fmt(d.get('tflops_dense_equiv'), '.1f')} | {_fmt(d.get('search_share'), '.1%')} "
            f"| {_fmt(d.get('vs_cudnn'), '.2f')} | {_fmt(d.get('vs_bound'), '.2f')} | {_fmt(r.ref_rel_err, '.1e')} "
            f"| {_fmt(r.vs_exact_rel_err, '.1e')} "
            f"| {r.note.replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def write_results(rows: Sequence[Row], meta: dict, out_dir: Path, stem: str) -> list[Path]:
    """Write `stem`.json and `stem`.md under out_dir (created if needed); returns their paths."""
    derive(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    payload = {"meta": meta, "rows": [dataclasses.asdict(r) for r in rows]}
    json_path.write_text(json.dumps(payload, indent=1) + "\n")
    md_path.write_text(markdown(rows, meta))
    return [json_path, md_path]


def plot(rows: Sequence[Row], path: Path) -> Path | None:
    """ms vs context per row: one panel per head config (columns) and mode (rows). None if no data."""
    ok = [r for r in rows if r.status == "ok" and r.ms]
    if not ok:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({(r.heads, r.head_dim) for r in ok}, key=lambda c: (c[1], c[0]))
    modes = [m for m in MODES if any(r.mode == m for r in ok)]
    names = list(dict.fromkeys(r.row for r in ok))
    fig, axes = plt.subplots(len(modes), len(configs), figsize=(4 * len(configs), 3.5 * len(modes)), squeeze=False)
    for i, mode in enumerate(modes):
        for j, (heads, head_dim) in enumerate(configs):
            ax = axes[i][j]
            for c, name in enumerate(names):
                pts = sorted(
                    (r.seqlen, r.ms)
                    for r in ok
                    if (r.row, r.mode, r.heads, r.head_dim) == (name, mode, heads, head_dim)
                )
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", color=f"C{c}", label=name)
            contexts = sorted({r.seqlen for r in ok if (r.mode, r.heads, r.head_dim) == (mode, heads, head_dim)})
            ax.set(xscale="log", yscale="log", title=f"{heads}x{head_dim}, {mode}")
            ax.set_xticks(contexts, [f"{t // 1024}k" if t % 1024 == 0 else str(t) for t in contexts])
            ax.minorticks_off()
            ax.set(xlabel="context (tokens)", ylabel="ms")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def summary(rows: Sequence[Row]) -> str:
    """A compact pivot for stdout: one line per (config, mode, T), one ms column per row name, then the
    ACP row's FLOP saving, boundary-search share and time relative to cuDNN."""
    derive(rows)
    names = list(dict.fromkeys(r.row for r in rows))
    by_key: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        by_key.setdefault(r.key, {})[r.row] = r
    head = f"{'config':>7} {'mode':>6} {'T':>6} " + " ".join(f"{n:>12}" for n in names)
    lines = [head + f" {'saving':>7} {'search':>7} {'acp/cudnn':>9}"]
    for key, group in by_key.items():
        heads, head_dim, seqlen, mode = key
        cells = []
        for n in names:
            r = group.get(n)
            cells.append(f"{(f'{r.ms:.3f}' if r.status == 'ok' else r.status) if r else '':>12}")
        acp = group.get("foxacp-acp")
        saving = _fmt(acp.flop_saving if acp else None, ".1%")
        search = _fmt(acp.derived.get("search_share") if acp else None, ".1%")
        ratio = _fmt(acp.derived.get("vs_cudnn") if acp else None, ".2f")
        config = f"{heads}x{head_dim}"
        lines.append(f"{config:>7} {mode:>6} {seqlen:>6} " + " ".join(cells) + f" {saving:>7} {search:>7} {ratio:>9}")
    return "\n".join(lines)


def load_results(path: Path) -> tuple[dict, list[Row]]:
    """Read a JSON written by `write_results`: (meta, rows)."""
    data = json.loads(Path(path).read_text())
    return data["meta"], [Row(**r) for r in data["rows"]]


def merge(paths: Sequence[Path], out_dir: Path, stem: str) -> list[Path]:
    """Merge result files of several runs (e.g. one GPU call per head config) into one JSON, Markdown and
    plot. The first file's meta is kept; the others' devices, versions, commits and settings (gates, timing,
    tolerance, ...) must match it."""
    meta, rows = load_results(paths[0])
    for path in paths[1:]:
        other, more = load_results(path)
        for key in ("device", "torch", "triton", "commit", "settings"):
            if other.get(key) != meta.get(key):
                raise ValueError(f"{path}: {key} {other.get(key)!r} differs from {paths[0]}: {meta.get(key)!r}")
        rows += more
    # Two measurements of one row would both be shown, and derive() would divide one by the other's baseline.
    seen = Counter((r.row, r.heads, r.head_dim, r.seqlen, r.mode, r.batch) for r in rows)
    if repeated := [key for key, n in seen.items() if n > 1]:
        raise ValueError(f"{len(repeated)} rows are measured in more than one file, e.g. {repeated[0]}")
    meta = {**meta, "merged_from": [Path(p).name for p in paths]}
    files = write_results(rows, meta, out_dir, stem)
    png = plot(rows, out_dir / f"{stem}.png")
    return files + ([png] if png else [])


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m foxacp.bench.report",
        description="Merge the attention result files of one tree's parts into one result set.",
    )
    parser.add_argument("files", nargs="+", type=Path, help="JSON files written by foxacp.bench.attention")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_ROOT, help="root of the result set folders")
    parser.add_argument("--what", default="attention", help="the merged set's benchmark name (see the index)")
    args = parser.parse_args(argv)
    meta, _ = load_results(args.files[0])
    device = device_tag(meta["device"])
    out_dir = result_dir(args.what, date=meta["date"], commit=meta["commit"], device=device, root=args.results_dir)
    for f in merge(args.files, out_dir, "attention"):
        print(f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
