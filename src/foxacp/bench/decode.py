"""End-to-end decoding benchmark: tokens/s of a preset model after long prompts, exact and ACP, eager and CUDA graph.

    python -m foxacp.bench.decode                   # 760M, B = 1 and 16, prompts of 4k, 16k and 64k tokens
    python -m foxacp.bench.decode --quick           # prompts of 4k and 16k, 32 timed steps (~3 min on an H200)

The weights are random (N(0, 0.02), QK-norm gains 1): decoding speed does not depend on their values, and
the static ACP bound is then U = 1.02 sqrt(D), as for the attention benchmark. The forget gates are not the
random model's own (logsigmoid of a random projection, about -0.7 per token, would let ACP prune almost
everything) but read from a table by position: the synthetic profile of ``foxacp.bench.gates`` calibrated to
the prompt length, shared by every layer (label "synthetic"), or gates recorded from a trained model
(``--gates FILE`` of n layers, time and heads tiled): model layer l reads file layer l mod n (label
"file:NAME (layer l <- l mod n)"), or with ``--gates-layer L`` every layer reads file layer L (label
"file:NAME layer L"); sequence b reads the file's row b mod (its batch).

For each batch size and prompt length: one prefill per mode (exact, then ACP) in chunks of ``--prefill-chunk``
tokens per row (timed), then ``--steps`` greedy one-token steps timed eagerly, replayed as one CUDA graph,
and (with --compile) through torch.compile inside a graph, all from the same post-prefill cache state. Per
row: tokens/s (batch * steps / seconds), the share of key blocks the decode op kept (ACP stats of one step),
peak memory of the prefill and of decoding, and the roofline: the bytes one step must read (every weight but
the embedding table, plus the kept K, V and c of every layer at the mean length over the timed steps) over
the copy bandwidth measured at the start (or ``--bandwidth``). The prefill is timed on its second run (the
first compiles the Triton kernels). Cases whose cache does not fit in free memory are recorded as skipped.
Results (JSON and Markdown) go to --out, default results/<date>-<commit>-decode-e2e-<device>/; a short
table is printed last. On a CPU it runs too (no graphs, no memory figures), which the tests use with the
tiny preset.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from foxacp.infer.generate import decode_one_token
from foxacp.infer.graph import CUDAGraphStep, compiled_block_step
from foxacp.infer.sampling import sample
from foxacp.io import REPO
from foxacp.model import FoxLM, ModelConfig
from foxacp.model.cache import KVCache
from foxacp.ops import set_value_checks
from foxacp.ops.config import dependent_launch_available

from .gates import fit_log_fgate, load_log_fgate_layers, synthetic_log_fgate
from .report import environment
from .results import benchmark_name, check_tag, device_tag, result_dir

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
BATCHES = (1, 16)
CONTEXTS = (4096, 16384, 65536)


def build_model(preset: str, dtype: torch.dtype, device: torch.device, backend: str | None = None) -> FoxLM:
    """A randomly initialised ``preset`` model in eval mode, built directly on ``device``."""
    with torch.device(device):
        model = FoxLM(ModelConfig.from_preset(preset, attn_backend=backend))
    return model.to(dtype).eval()


def set_acp(model: FoxLM, acp: bool, *, record_stats: bool = False) -> None:
    """Switch ACP (and the stats record) on every layer of model in place."""
    use_config(model, dataclasses.replace(model.config, acp=acp, record_acp_stats=record_stats))


def use_config(model: FoxLM, cfg: ModelConfig) -> None:
    """Make ``cfg`` the config of model and of every layer's attention (for its runtime fields: acp, stats, backend)."""
    model.config = cfg
    for block in model.blocks:
        block.attn.cfg = cfg


def layer_gates(gates: Tensor, rows: Tensor, pos: Tensor) -> Tensor:
    """Log forget gates (B, n, H) at positions pos (B, n) int64 from one layer's table gates (Bt, L, H) =
    table[l mod n_src], sequence b reading its row rows[b] (``table_rows``)."""
    # An index read of the needed positions only: a (B, L, H) copy per call would not fit at large batches.
    return gates[rows[:, None], pos]


def table_rows(table: Tensor, batch: int) -> Tensor:
    """(batch,) int64 on the table's device: the table row b mod Bt that sequence b reads."""
    return torch.arange(batch, device=table.device) % table.shape[1]


@contextlib.contextmanager
def gates_from_table(model: FoxLM, table: Tensor, cache: KVCache) -> Iterator[None]:
    """Within it, layer l takes its log forget gates from table (n_src, Bt, Tmax, Hq) at each new token's
    position in ``cache`` (table[l mod n_src], row b mod Bt: ``layer_gates``); on exit the layers compute
    their own again (and hold neither the table nor the cache)."""
    if table.dim() != 4:
        raise ValueError(f"expected a table (n_src, Bt, Tmax, Hq), got {tuple(table.shape)}")
    rows = table_rows(table, cache.batch_size)
    for i, block in enumerate(model.blocks):
        # The layer's view is an argument, not an index: torch.compile traces one graph for every layer.
        def log_fgate(x: Tensor, gates: Tensor = table[i % table.shape[0]]) -> Tensor:
            pos = cache.lengths[:, None].long() + torch.arange(x.shape[1], device=x.device)
            return layer_gates(gates, rows, pos)

        block.attn.log_fgate = log_fgate
    try:
        yield
    finally:
        for block in model.blocks:
            del block.attn.log_fgate


def resolve_gates(args: argparse.Namespace) -> None:
    """Set ``args.recorded`` (the file's gates (n, B0, T0, H) float32 on the CPU, n = 1 with --gates-layer; None
    for the synthetic profile) and ``args.gates_label``, which names the layer mapping. Raises ValueError on a
    bad file or layer."""
    if args.gates is None:
        args.recorded, args.gates_label = None, "synthetic"
        return
    gates, name, layer = load_log_fgate_layers(args.gates), Path(args.gates).name, args.gates_layer
    n = gates.shape[0]
    if layer is None:
        args.recorded, args.gates_label = gates, f"file:{name} (layer l <- l mod {n})"
    elif -n <= layer < n:
        args.recorded, args.gates_label = gates[layer][None], f"file:{name} layer {layer % n}"
    else:
        raise ValueError(f"{args.gates}: layer {layer} out of range for {n} layers")


def gate_table(args: argparse.Namespace, batch: int, context: int, length: int, heads: int, device) -> Tensor:
    """(n_src, Bt, length, heads) float32 log forget gates on device, read through ``layer_gates``.

    Synthetic (calibrated to context): n_src = 1, Bt = batch (each row its own noise). Recorded
    (``args.recorded`` from ``resolve_gates``): its layers, its batch cropped to ``batch``, time and heads tiled.
    """
    if args.recorded is None:
        # The profile scales its windows with the sequence length it is given: calibrate it to the prompt.
        gates = synthetic_log_fgate(batch, context, heads)
        return fit_log_fgate(gates, batch, length, heads)[None].to(device)
    rows = min(batch, args.recorded.shape[1])
    return torch.stack([fit_log_fgate(g, rows, length, heads) for g in args.recorded]).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of fn() with the device drained before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second of a large device-to-device copy (read + write): on CUDA the decode attention
    benchmark's do_bench figure (a synchronised wall clock read it ~2% low), elsewhere the best of five."""
    if device.type == "cuda":
        from .decode_attention import copy_bandwidth as measured

        return measured(device)
    n = 1 << 26
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(seconds(lambda: dst.copy_(src), device) for _ in range(5))
    return 2 * n / best


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak allocated memory since the last reset_peak, in GiB (None off CUDA)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def step_bytes(model: FoxLM, batch: int, length: float, kept: list[float], kv_elem: int) -> float:
    """Bytes one decode step must read: weights (the embedding table excepted) plus kept K, V and c per layer.

    ``kept`` is each layer's share of kept (query head, block) pairs: the K/V share for the MHA presets; with GQA a
    group loads a block any of its heads keeps, which this would undercount (``decode_attention`` counts both)."""
    cfg = model.config
    weights = sum(p.numel() * p.element_size() for name, p in model.named_parameters() if name != "embed.weight")
    per_token = 2 * cfg.kv_heads * cfg.head_dim * kv_elem + 4 * cfg.n_heads
    return weights + sum(batch * length * per_token * k for k in kept)


def kept_fraction(model: FoxLM, step: Callable[[Tensor], Tensor], tokens: Tensor, cache: KVCache) -> list[float]:
    """Per layer, the share of key blocks the decode op keeps on one step (the cache is restored after)."""
    saved = cache.snapshot()
    acp = model.config.acp
    set_acp(model, acp, record_stats=True)
    step(tokens)
    stats = model.acp_stats()
    set_acp(model, acp)
    cache.restore(saved)
    return [1.0 - float(s.flop_saving) for s in stats]


def time_decode(step: Callable[[Tensor], Tensor], tokens: Tensor, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` chained decode steps (each feeds its token to the next)."""

    def run() -> None:
        t = tokens
        for _ in range(steps):
            t = step(t)

    return seconds(run, device)


def run_case(model: FoxLM, args: argparse.Namespace, batch: int, context: int, bandwidth: float) -> list[dict]:
    """The rows of one (batch, prompt length): exact and ACP, eager and graph."""
    device = model.embed.weight.device
    cfg = model.config
    length = context + args.steps + 4  # room for the warm-up steps, which are undone
    kv_elem = model.embed.weight.element_size()
    need = cfg.n_layers * batch * length * (2 * cfg.kv_heads * cfg.head_dim * kv_elem + 4 * cfg.n_heads)
    base = dict(batch=batch, context=context, gates=args.gates_label)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the previous case's cache is only reserved, which mem_get_info counts as used
    if device.type == "cuda" and need > 0.9 * torch.cuda.mem_get_info(device)[0]:
        return [dict(base, mode=m, skipped=f"cache of {need / 2**30:.1f} GiB does not fit") for m in ("exact", "acp")]
    cache = model.new_cache(batch, length)
    with gates_from_table(model, gate_table(args, batch, context, length, cfg.n_heads, device), cache):
        return _timed_rows(model, args, cache, context, bandwidth, base)


def _timed_rows(
    model: FoxLM, args: argparse.Namespace, cache: KVCache, context: int, bandwidth: float, base: dict
) -> list[dict]:
    """Prefill and the timed decode variants of one case, exact then ACP, from ``cache`` (empty)."""
    device, cfg, batch = model.embed.weight.device, model.config, cache.batch_size
    kv_elem = model.embed.weight.element_size()
    gen = torch.Generator(device=device).manual_seed(0)
    prompts = torch.randint(cfg.vocab_size, (batch, context), device=device, generator=gen)
    greedy = functools.partial(sample, temperature=0.0)
    chunk = args.prefill_chunk or context
    rows = []
    for mode in ("exact", "acp"):
        set_acp(model, mode == "acp")

        def prefill() -> None:
            cache.reset()
            for start in range(0, context, chunk):
                model(prompts[:, start : start + chunk], cache=cache)

        prefill()  # warm-up: Triton compiles the training kernels on their first call
        reset_peak(device)
        prefill_s = seconds(prefill, device)
        prefill_peak = peak_gib(device)
        reset_peak(device)
        first = prompts[:, -1]
        saved = cache.snapshot()
        step = functools.partial(decode_one_token, model, cache, sampler=greedy)
        kept = kept_fraction(model, step, first, cache) if mode == "acp" else [1.0] * cfg.n_layers
        floor = step_bytes(model, batch, context + args.steps / 2, kept, kv_elem) / bandwidth
        variants = [("eager", step, False)]
        if device.type == "cuda" and not args.no_graphs:
            variants.append(("graph", step, True))
        if args.compile:
            compiled = functools.partial(
                step, run_block=compiled_block_step(args.compile_mode, pdl=dependent_launch_available(device))
            )
            variants.append(("compiled" + ("+graph" if device.type == "cuda" else ""), compiled, device.type == "cuda"))
        for name, fn, graph in variants:
            # The compiled rows decode as generate(compile=True) does: projections fused into one GEMM per block.
            with model.fused_projections() if name.startswith("compiled") else contextlib.nullcontext():
                reset_peak(device)  # each row's own peak, not the previous rows'
                if graph:
                    fn = CUDAGraphStep(fn, cache, first, None)
                else:
                    time_decode(fn, first, 2, device)  # warm-up: Triton compiles, the allocator settles
                cache.restore(saved)
                s = time_decode(fn, first, args.steps, device)
                cache.restore(saved)
            rows.append(
                dict(
                    base,
                    mode=mode,
                    decode=name,
                    tokens_per_s=batch * args.steps / s,
                    ms_per_step=1e3 * s / args.steps,
                    prefill_s=prefill_s,
                    kept_kv=sum(kept) / len(kept),
                    roofline_tokens_per_s=batch / floor,
                    of_roofline=floor / (s / args.steps),
                    prefill_peak_gib=prefill_peak,
                    decode_peak_gib=peak_gib(device),
                )
            )
            del fn  # a captured graph holds its memory pool until released
    return rows


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(rows: Sequence[dict]) -> str:
    """A Markdown table of the rows."""
    head = "| B | prompt | gates | mode | decode | tokens/s | ms/step | of roofline | kept KV | prefill s | peak GiB "
    lines = [head + "(prefill / decode) |", "|" + "---|" * 11]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['batch']} | {r['context']} | {r['gates']} | {r['mode']} | - | {r['skipped']} |||||")
            continue
        lines.append(
            f"| {r['batch']} | {r['context']} | {r['gates']} | {r['mode']} | {r['decode']} | "
            f"{r['tokens_per_s']:.1f} | {r['ms_per_step']:.2f} | {100 * r['of_roofline']:.0f}% | "
            f"{100 * r['kept_kv']:.0f}% | {r['prefill_s']:.2f} | "
            f"{_fmt(r['prefill_peak_gib'], '.1f')} / {_fmt(r['decode_peak_gib'], '.1f')} |"
        )
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def default_schedule() -> str:
    """The decode kernels' default split schedule (``ops.triton_decode.SCHEDULE``), for result metadata."""
    from foxacp.ops import triton_decode

    return triton_decode.SCHEDULE


def add_schedule_argument(p: argparse.ArgumentParser) -> None:
    """--schedule: the decode kernels' split schedule for the run (``ops.triton_decode.use_schedule``)."""
    from foxacp.ops.triton_decode import SCHEDULES

    p.add_argument(
        "--schedule", choices=SCHEDULES, default=None,
        help="split schedule of the decode kernels (default: the kernels' own, ops.triton_decode.SCHEDULE)",
    )  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m foxacp.bench.decode", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="760M", help="model preset (random weights)")
    p.add_argument("--batch", type=_ints, default=list(BATCHES), help="batch sizes, e.g. 1,16")
    p.add_argument("--contexts", type=_ints, default=None, help="prompt lengths (default 4096,16384,65536)")
    p.add_argument("--steps", type=int, default=None, help="timed decode steps (default 128; --quick 32)")
    p.add_argument("--prefill-chunk", type=int, default=None, help="tokens per row per prefill call (default all)")
    p.add_argument("--gates", default=None, help="recorded log forget gates (.pt/.safetensors); default synthetic")
    p.add_argument(
        "--gates-layer", type=int, default=None, help="one file layer for every model layer (default: l mod layers)"
    )
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--device", default=None, help="default cuda when available")
    p.add_argument("--attn-backend", choices=("triton", "torch"), default=None, help="default: auto")
    p.add_argument("--bandwidth", type=float, default=None, help="GB/s for the roofline (default: measured copy)")
    p.add_argument("--no-graphs", action="store_true", help="no CUDA-graph rows")
    p.add_argument("--compile", action="store_true", help="add rows of the torch.compile'd step (in a graph)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode of those rows (max-autotune-no-cudagraphs)")
    add_schedule_argument(p)
    p.add_argument("--quick", action="store_true", help="prompts of 4k and 16k, 32 timed steps")
    p.add_argument("--out", type=Path, default=None, help="results folder")
    p.add_argument("--tag", type=check_tag, default="", help="names the set (decode-e2e-TAG); default: marks")
    args = p.parse_args(argv)
    args.contexts = args.contexts or (list(CONTEXTS[:2]) if args.quick else list(CONTEXTS))
    args.steps = args.steps or (32 if args.quick else 128)
    resolve_gates(args)
    return args


def _default_out(meta: dict, args: argparse.Namespace) -> Path:
    """results/<date>-<commit>-decode-e2e[-TAG]-<device>/ in the checkout foxacp runs from, TAG naming how the run
    departs from the full default one (``benchmark_name``)."""
    full = (args.batch, args.contexts, args.preset) == (list(BATCHES), list(CONTEXTS), "760M")
    marks = (
        "quick" if args.quick else "",
        "recorded" if args.gates else "",
        args.schedule or "",
        "partial" if not full and not args.quick else "",
    )
    what = benchmark_name("decode-e2e", args.tag, marks=marks)
    return result_dir(what, date=meta["date"], commit=meta["commit"], device=device_tag(meta["device"]),
                      root=REPO / "results")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    set_value_checks(False)  # they read the whole cache back to the host on every call
    if args.compile:
        torch._dynamo.config.cache_size_limit = 64  # one compiled step per (batch, prompt, mode)
    bandwidth = 1e9 * args.bandwidth if args.bandwidth else copy_bandwidth(device)
    model = build_model(args.preset, dtype, device, args.attn_backend)
    meta = environment(REPO, device) | {
        "preset": args.preset,
        "dtype": str(dtype).removeprefix("torch."),
        "steps": args.steps,
        "gates": args.gates_label,
        "bandwidth_gb_s": bandwidth / 1e9,
        "weights": "random",
        "compile_mode": args.compile_mode,
        "decode_schedule": args.schedule or default_schedule(),
    }
    out = args.out or _default_out(meta, args)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    from foxacp.ops.triton_decode import use_schedule

    with torch.no_grad(), use_schedule(args.schedule):
        for batch in args.batch:
            for context in args.contexts:
                rows += run_case(model, args, batch, context, bandwidth)
                (out / "decode-e2e.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
                stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
                print(f"[{stamp}] B={batch} prompt={context} done", flush=True)
    note = (
        f"{meta['preset']} {meta['dtype']}, random weights, {meta['gates']} gates, {meta['device']}, "
        f"commit {meta['commit']}; roofline at {meta['bandwidth_gb_s']:.0f} GB/s"
        + (f"; compiled rows in mode {args.compile_mode}" if args.compile and args.compile_mode else "")
        + (f"; {args.schedule} split schedule" if args.schedule else "")
    )
    (out / "decode-e2e.md").write_text(f"# Decoding end to end\n\n{note}\n\n{table(rows)}\n")
    print(f"\nresults in {out}\n{note}\n\n{table(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
