"""KV-cache eviction benchmark: memory held against a full cache, the largest batch in a memory budget, tokens/s.

    python -m foxacp.bench.evict --out DIR     # 760M bf16, contexts 16k and 64k, 100 GB (~2-4 min on an H200)

Random weights (QK-norm gains 1: U = 1.02 sqrt(D)) and the gate table of ``foxacp.bench.decode``: the
synthetic profile of ``foxacp.bench.gates`` calibrated to each context, shared by every layer (label
"synthetic"), or ``--gates FILE`` of n layers read by model layer l at file layer l mod n (or at
``--gates-layer L`` for every layer), sequence b at file row b mod (its batch). The prompt is not run through the
model: each layer's cache is filled directly (random K and V, that layer's gates) in chunks of ``--chunk``
tokens, with eviction between chunks as a chunked prefill does; speed and memory do not depend on the K and V
values.

1. Check: the paged Triton kernel against its float64 PyTorch twin on the filled 16k cache (max abs error).
2. Memory, per context (2 sequences): blocks held once the prompt is in (the decode-time state) and at the
   peak of the fill, against a full cache of the same max_len (``KVCache``: K, V and c of every position).
3. Largest batch at the longest context in ``--budget-gb`` of KV memory: full cache, budget / bytes per
   sequence; evicting, budget / (peak blocks per sequence + one reserved block per (layer, KV head), + 2%).
   Both are verified: the cache of that batch is allocated and filled (the evicting one in a pool of exactly
   the budget, which raises if it runs out) and ``--steps`` greedy steps are timed in a CUDA graph: tokens/s
   at that batch (the full cache decodes with ACP too, skipping the blocks it keeps but never reads).
Targets (issue 21, gates pruning ~70%): KV held <= 35% at 16k and <= 15% at 64k; at 64k a batch >= 3x and
tokens/s >= 2x the full cache's. Results: evict.json and evict.md in --out; a short table is printed last.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from foxacp.infer.generate import CHECK_EVERY, decode_one_token
from foxacp.infer.graph import CUDAGraphStep
from foxacp.infer.sampling import sample
from foxacp.model import FoxLM
from foxacp.model.cache import REBASE_AT, KVCache
from foxacp.model.paged import PagedKVCache
from foxacp.ops import set_value_checks
from foxacp.ops.paged import forgetting_attention_with_paged_kvcache

from .decode import (
    DTYPES,
    add_schedule_argument,
    build_model,
    default_schedule,
    gate_table,
    gates_from_table,
    layer_gates,
    resolve_gates,
    sync,
    table_rows,
    time_decode,
)
from .report import environment

TARGETS = {"held_16k": 0.35, "held_64k": 0.15, "batch_ratio": 3.0, "speed_ratio": 2.0}


def fill(model: FoxLM, cache: KVCache, table: Tensor, context: int, chunk: int) -> tuple[int, int]:
    """Write ``context`` tokens into every layer, ``chunk`` at a time: random K and V, and the gates of table
    (n_src, Bt, max_len, Hq) that layer l, row b reads (table[l mod n_src], row b mod Bt: ``layer_gates``).

    A paged cache evicts before each chunk (``prepare``) and once more at the end (the decode-time state).
    Returns the peaks of blocks held by one sequence, summed over layers and in its busiest layer (0, 0 for a
    full cache). Each layer has a pool of its own, so a batch is sized by the busiest layer.
    """
    cfg, B = model.config, cache.batch_size
    gen = torch.Generator(device=table.device).manual_seed(0)
    shape = (2, B, chunk, cfg.kv_heads, cfg.head_dim)
    kv = torch.randn(shape, generator=gen, device=table.device).to(cache.layers[0].k.dtype)
    rows = table_rows(table, B)
    peak = peak_layer = 0
    for start in range(0, context, chunk):
        n = min(chunk, context - start)
        if isinstance(cache, PagedKVCache):
            cache.prepare(n)
            held = torch.stack([layer.held().sum(1) for layer in cache.layers])  # (layers, B)
            peak = max(peak, int(held.sum(0).max()))
            peak_layer = max(peak_layer, int(held.max()))
        pos = start + torch.arange(n, device=table.device).expand(B, n)
        for i, layer in enumerate(cache.layers):
            gates = layer_gates(table[i % table.shape[0]], rows, pos)
            layer.write(pos, kv[0, :, :n], kv[1, :, :n], gates, rebase_at=REBASE_AT)
        cache.lengths.add_(n)
    if isinstance(cache, PagedKVCache):
        cache.prepare(CHECK_EVERY)
    return peak, peak_layer


def kernel_check(cache: PagedKVCache, heads: int) -> float:
    """Max abs difference of the paged Triton kernel from its float64 twin on layer 0 of a filled cache."""
    layer = cache.layers[0]
    q = torch.randn(cache.batch_size, 1, heads, cache.head_dim, device=layer.k.device).to(layer.k.dtype)
    args = (layer.table, layer.start, cache.lengths)
    kw = dict(qk_bound=layer.u, max_seqlen=cache.max_len, log_eps=layer.log_eps)
    out = forgetting_attention_with_paged_kvcache(q, layer.pool.k, layer.pool.v, layer.pool.c, *args, **kw)
    pools = (layer.pool.k.double(), layer.pool.v.double(), layer.pool.c)
    ref = forgetting_attention_with_paged_kvcache(q.double(), *pools, *args, backend="torch", **kw)
    return float((out.double() - ref).abs().max())


def memory_row(
    model: FoxLM, args: argparse.Namespace, context: int, pool_fraction: float = 1.0
) -> tuple[dict, PagedKVCache]:
    """Blocks held at decode time and at the fill's peak, for 2 sequences of ``context`` tokens, in a pool of
    ``pool_fraction`` of the full cache per layer (a smaller one fits a large context in host memory; it raises
    ``CachePoolExhausted`` rather than measure wrongly when the peak does not fit)."""
    device, cfg = model.embed.weight.device, model.config
    B = 2
    cache = model.new_cache(B, context + args.steps + 2 * CHECK_EVERY, evict=True, pool_fraction=pool_fraction)
    table = gate_table(args, B, context, cache.max_len, cfg.n_heads, device)
    sync(device)
    began = time.perf_counter()
    peak, peak_layer = fill(model, cache, table, context, args.chunk)
    sync(device)
    fill_s = time.perf_counter() - began
    report = cache.memory_report()
    held = torch.tensor([r["per_kv_head_fraction"] for r in report["layers"]])  # (layers, Hkv)
    per_seq_full = report["bytes_full"] / B
    row = dict(
        context=context,
        gates=args.gates_label,
        held_fraction=report["fraction_held"],
        peak_fraction=peak * cache.block_bytes() / per_seq_full,
        peak_blocks_per_seq=peak,
        peak_layer_blocks_per_seq=peak_layer,
        head_fraction_min=float(held.min()),
        head_fraction_max=float(held.max()),
        full_bytes_per_seq=per_seq_full,
        fill_s=fill_s,
        delta=report["guarantee"]["delta"][0][0],
        L_max=report["guarantee"]["L_max"],
        eps=report["guarantee"]["eps"],
    )
    return row, cache


def timed_steps(model: FoxLM, cache: KVCache, steps: int) -> float:
    """Tokens/s of ``steps`` greedy one-token steps (in a CUDA graph on CUDA) from the filled cache."""
    device = model.embed.weight.device
    if isinstance(cache, PagedKVCache):
        cache.auto_prepare = False
        cache.prepare(steps + 4)  # the warm-up steps are undone, the timed ones need their blocks
    step = functools.partial(decode_one_token, model, cache, sampler=functools.partial(sample, temperature=0.0))
    first = torch.zeros(cache.batch_size, dtype=torch.long, device=device)
    saved = cache.snapshot()
    if device.type == "cuda":
        step = CUDAGraphStep(step, cache, first, None)
    else:
        time_decode(step, first, 2, device)
    cache.restore(saved)
    s = time_decode(step, first, steps, device)
    cache.restore(saved)
    return cache.batch_size * steps / s


def batch_rows(model: FoxLM, args: argparse.Namespace, context: int, mem: dict) -> list[dict]:
    """The largest batch in the budget, full and evicting, each verified by filling it and decoding."""
    device, cfg = model.embed.weight.device, model.config
    budget = args.budget_gb * 1e9
    max_len = context + args.steps + 2 * CHECK_EVERY
    rows = []
    for mode in ("full", "evict"):
        if device.type == "cuda":  # each row's own peak, not the memory rows' before it
            torch.cuda.reset_peak_memory_stats(device)
        if mode == "full":
            per_seq = mem["full_bytes_per_seq"]
        else:
            block_bytes = mem["full_bytes_per_seq"] / (cfg.n_layers * cfg.kv_heads * math.ceil(max_len / 64))
            # Each layer has a pool of budget / n_layers: the busiest layer's peak sizes the batch. Rows differ a
            # little (the gates' noise): 2% over the measured peak.
            per_seq = 1.02 * cfg.n_layers * (mem["peak_layer_blocks_per_seq"] + cfg.kv_heads) * block_bytes
        batch = int(budget // per_seq)
        row = dict(context=context, mode=mode, batch=batch, bytes_per_seq=per_seq, budget_gb=args.budget_gb)
        if batch < 1:
            rows.append(dict(row, skipped="one sequence does not fit the budget"))
            continue
        if mode == "full":
            cache = model.new_cache(batch, max_len)
        else:
            pool = int(budget // (cfg.n_layers * block_bytes))
            cache = model.new_cache(batch, max_len, evict=True, pool_blocks=pool)
        table = gate_table(args, batch, context, max_len, cfg.n_heads, device)
        with gates_from_table(model, table, cache):
            fill(model, cache, table, context, args.chunk)
            row["tokens_per_s"] = timed_steps(model, cache, args.steps)
        if isinstance(cache, PagedKVCache):
            row["held_fraction"] = cache.memory_report()["fraction_held"]
        if device.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        rows.append(row)
        del cache, table
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def verdicts(mem_rows: list[dict], batch: list[dict]) -> dict:
    """Each target against the measurement (None where the measurement is missing)."""
    held = {r["context"]: r["held_fraction"] for r in mem_rows}
    out = {}
    for ctx, key in ((16384, "held_16k"), (65536, "held_64k")):
        if ctx in held:
            out[key] = {"value": held[ctx], "target": f"<= {TARGETS[key]}", "met": held[ctx] <= TARGETS[key]}
    by_mode = {r["mode"]: r for r in batch if "skipped" not in r}
    if len(by_mode) == 2:
        full, ev = by_mode["full"], by_mode["evict"]
        for key, value in (
            ("batch_ratio", ev["batch"] / full["batch"]),
            ("speed_ratio", ev["tokens_per_s"] / full["tokens_per_s"]),
        ):
            out[key] = {"value": value, "target": f">= {TARGETS[key]}", "met": value >= TARGETS[key]}
    return out


def markdown(meta: dict, mem_rows: list[dict], batch: list[dict], verdict: dict) -> str:
    lines = [
        "# KV-cache eviction",
        "",
        f"{meta['preset']} {meta['dtype']}, random weights, {meta['gates']} gates, {meta['device']}, "
        f"commit {meta['commit']}; paged kernel vs float64 twin: max abs error {meta['kernel_max_abs_err']:.2e}",
        "",
        "| context | held at decode | peak in fill | per KV head (min..max) | delta | L_max |",
        "|---|---|---|---|---|---|",
    ]
    for r in mem_rows:
        lines.append(
            f"| {r['context']} | {100 * r['held_fraction']:.1f}% | {100 * r['peak_fraction']:.1f}% | "
            f"{100 * r['head_fraction_min']:.0f}%..{100 * r['head_fraction_max']:.0f}% | {r['delta']:.2f} | "
            f"{r['L_max']} |"
        )
    lines += ["", "| context | cache | largest batch | GB per sequence | tokens/s |", "|---|---|---|---|---|"]
    for r in batch:
        speed = r.get("tokens_per_s")
        lines.append(
            f"| {r['context']} | {r['mode']} | {r['batch']} | {r['bytes_per_seq'] / 1e9:.2f} | "
            f"{'-' if speed is None else format(speed, '.0f')} |"
        )
    lines += ["", "| target | value | met |", "|---|---|---|"]
    lines += [f"| {k} {v['target']} | {v['value']:.3f} | {v['met']} |" for k, v in verdict.items()]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m foxacp.bench.evict", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="760M", help="model preset (random weights)")
    p.add_argument("--contexts", default="16384,65536", help="prompt lengths; the batch rows use the longest")
    p.add_argument("--budget-gb", type=float, default=100.0, help="KV memory budget for the largest batch (GB)")
    p.add_argument("--steps", type=int, default=32, help="timed decode steps")
    p.add_argument("--chunk", type=int, default=1024, help="tokens per fill chunk (eviction between chunks)")
    p.add_argument("--gates", default=None, help="recorded log forget gates (.pt/.safetensors); default synthetic")
    p.add_argument(
        "--gates-layer", type=int, default=None, help="one file layer for every model layer (default: l mod layers)"
    )
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--device", default=None, help="default cuda when available")
    p.add_argument("--attn-backend", choices=("triton", "torch"), default=None, help="default: auto")
    add_schedule_argument(p)
    p.add_argument("--out", type=Path, required=True, help="results folder")
    args = p.parse_args(argv)
    args.contexts = sorted(int(x) for x in args.contexts.split(","))
    resolve_gates(args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    set_value_checks(False)  # they read whole caches back to the host on every call
    model = build_model(args.preset, dtype, device, args.attn_backend)
    meta = environment(device=device) | {"preset": args.preset, "dtype": str(dtype).removeprefix("torch."),
                            "gates": args.gates_label, "steps": args.steps, "chunk": args.chunk,
                            "weights": "random", "decode_schedule": args.schedule or default_schedule()}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    mem_rows = []
    from foxacp.ops.triton_decode import use_schedule

    with torch.no_grad(), use_schedule(args.schedule):
        for context in args.contexts:
            row, cache = memory_row(model, args, context)
            if context == args.contexts[0]:
                meta["kernel_max_abs_err"] = kernel_check(cache, model.config.n_heads)
            mem_rows.append(row)
            print(f"context {context}: {100 * row['held_fraction']:.1f}% held", flush=True)
            del cache
        batch = batch_rows(model, args, args.contexts[-1], mem_rows[-1])
    verdict = verdicts(mem_rows, batch)
    result = {"meta": meta, "memory": mem_rows, "batch": batch, "targets": verdict}
    (args.out / "evict.json").write_text(json.dumps(result, indent=1))
    text = markdown(meta, mem_rows, batch, verdict)
    (args.out / "evict.md").write_text(text + "\n")
    print(f"\nresults in {args.out}\n\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
