"""Training throughput, exact vs ACP, the paper's table: tokens/s, attention's share, peak memory, MFU.

    python -m foxacp.bench.throughput [--quick] [--presets 125M 360M 760M] [--contexts 4096 8192 16384]
        [--gates-regimes init recorded --gates FILE] [--vocab 50304] [--tokens-per-step N] [--out DIR]

One configuration = (model preset, context, exact | acp, gate regime). Each runs what `foxacp train` runs
with its defaults (the preset's TrainConfig: compile "auto", bf16 autocast, activation checkpointing where a
step would not fit without it (``--activation-checkpointing`` overrides), the compiled blocks as CUDA graphs
where they can be (``--cuda-graphs`` overrides), AdamW, gradient clipping, the chunked head + loss) on random tokens.
Exact and ACP of one
(preset, context, regime) share one model: ``--warmup`` steps of each (compilation included), then
``--rounds`` rounds of ``--steps`` timed steps of each mode in turn (each step timed whole, synchronised; the
median of all kept), so that the clock drift of a power-capped GPU hits both modes alike; then one step of
each under the profiler for the attention kernels' share of the step. Micro-batches hold the preset's tokens
at 4k (125M: 8 x 4k, 2 x 16k); a step is ``--tokens-per-step`` tokens (default: one micro-batch; the paper's
0.5M-token steps only spread the optimizer over more micro-batches, ~1% of a step here).

Gate regimes: "init", the model's own gates at initialisation (what early training sees); "recorded", the
log forget gates of a file (``--gates``: (layers, B, T, H), e.g. ``foxacp export-gates`` of a trained model),
layer l taking the file's layer l mod its layer count, tiled to the batch (see bench/gates.py), in place of
the computed gates' values (their gradient path is kept, so the backward does the same work).

Results: one JSON line per configuration appended to ``throughput.jsonl`` in the output folder (a
configuration already there is skipped: the run resumes), then throughput.md and throughput.json with ACP's
gain next to the paper's. ``--quick``: 125M and 760M at 4k and 16k, init gates (8 configurations).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from foxacp.eval import token_losses
from foxacp.io import atomic_write, read_jsonl
from foxacp.model import FoxLM, flops_per_token
from foxacp.ops import set_value_checks
from foxacp.train.collect import manual_gc
from foxacp.train.config import build_model_config, preset_config
from foxacp.train.distributed import Dist, compile_wanted, graphs_wanted, parallelize, prepare_graph_grads
from foxacp.train.memory import checkpointing_wanted, device_capacity, step_memory
from foxacp.train.metrics import AcpMeter, acp_summary, peak_flops
from foxacp.train.optim import build_optimizer

from .decode import use_config
from .gates import fit_log_fgate, load_log_fgate_layers
from .report import environment
from .results import RESULTS_ROOT, device_tag, result_dir

# The ACP paper's training-throughput gains (method.md: +12% at 4k, +24% at 8k, +43-45% at 16k; 125M at 16k
# +45%, 760M at 16k +43% as issue 24 quotes it). 360M is not given separately: it takes 760M's figures.
PAPER_GAIN = {
    "125M": {4096: 0.12, 8192: 0.24, 16384: 0.45},
    "360M": {4096: 0.12, 8192: 0.24, 16384: 0.43},
    "760M": {4096: 0.12, 8192: 0.24, 16384: 0.43},
}
# The op's Triton kernels (forward, backward, gate scan and gradient, ACP bound, tables and tile plan).
ATTENTION_KERNELS = ("fwd_kernel", "dq_kernel", "dkdv_kernel", "gate_scan_kernel", "gate_grad_kernel",
                     "qc_table_kernel", "max_norm_kernel", "tile_plan_kernel")  # fmt: skip
QUICK = dict(presets=["125M", "760M"], contexts=[4096, 16384], modes=["exact", "acp"], regimes=["init"])


@dataclasses.dataclass(frozen=True)
class Config:
    """One row of the table."""

    preset: str
    context: int
    mode: str  # "exact" | "acp"
    regime: str  # "init" | "recorded"

    @property
    def key(self) -> str:
        return f"{self.preset}/{self.context}/{self.mode}/{self.regime}"


def micro_batch_size(preset: str, context: int) -> int:
    """The preset's micro-batch at 4k scaled to keep its tokens at ``context`` (at least one sequence)."""
    return max(1, preset_config(preset).micro_batch_size * preset_config(preset).seq_len // context)


def use_recorded_gates(model: FoxLM, gates: Tensor, batch: int, context: int) -> None:
    """Make every layer's attention see recorded gate values: gates (layers, B0, T0, H0) float32, layer l
    takes gates[l mod layers] tiled to (batch, context, n_heads). The computed gates' gradient path stays
    (value: recorded; gradient: the computed gates'), so forward and backward do the work they do in training."""
    n = gates.shape[0]
    for i, block in enumerate(model.blocks):
        attn = block.attn
        fixed = fit_log_fgate(gates[i % n], batch, context, model.config.n_heads).to(model.embed.weight.device)
        computed = attn.log_fgate

        def recorded(x: Tensor, computed: Callable = computed, fixed: Tensor = fixed) -> Tensor:
            own = computed(x)
            return fixed + (own - own.detach())

        attn.log_fgate = recorded


def kernel_ms(step: Callable[[], None]) -> dict[str, float]:
    """Device milliseconds per kernel name in one profiled ``step`` (CUDA)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return {
        e.key: (getattr(e, "device_time_total", 0.0) or getattr(e, "cuda_time_total", 0.0)) / 1e3
        for e in prof.key_averages()
    }


def _attention_ms(step: Callable[[], None]) -> float:
    """Device milliseconds of the attention kernels in one profiled ``step``."""
    return sum(ms for name, ms in kernel_ms(step).items() if name in ATTENTION_KERNELS)


def _flag(setting: str | bool) -> str | bool:
    """A true/false/auto command-line setting as TrainConfig takes it: True, False or "auto"."""
    return {"true": True, "false": False}.get(setting, setting)


def measure(cs: Sequence[Config], args: argparse.Namespace, gates: Tensor | None) -> list[dict[str, Any]]:
    """Measure the configurations ``cs``, which differ only in their mode, on one model built as `foxacp train`
    would; one record per configuration (see the module docstring).

    Each mode is warmed up (and compiled) first; then ``args.rounds`` rounds time ``args.steps`` steps of every
    mode in turn, so that the GPU's clock under its power cap drifts over the modes alike (experiments/040)."""
    c0 = cs[0]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tcfg = dataclasses.replace(
        preset_config(c0.preset),
        seq_len=c0.context,
        model_overrides={"acp": c0.mode == "acp", "vocab_size": args.vocab},
    )
    mcfg = build_model_config(tcfg)
    mb = args.micro_batch or micro_batch_size(c0.preset, c0.context)
    accum = max(1, (args.tokens_per_step or mb * c0.context) // (mb * c0.context))
    compiled = compile_wanted(tcfg.compile, device)
    torch.manual_seed(0)
    with torch.device(device):
        model = FoxLM(mcfg)
    if gates is not None:
        use_recorded_gates(model, gates, mb, c0.context)
    bf16 = device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    capacity = device_capacity(device)
    setting = tcfg.activation_checkpointing if args.activation_checkpointing is None else args.activation_checkpointing
    checkpointing, mem = checkpointing_wanted(
        _flag(setting),
        lambda: step_memory(model, mb, c0.context, autocast=autocast),
        capacity,
        measure_compiled=(lambda: step_memory(model, mb, c0.context, autocast=autocast, compiled=True))
        if compiled
        else None,
    )
    graphs = graphs_wanted(
        _flag(args.cuda_graphs),
        device,
        compiled=compiled,
        distributed=False,
        checkpointing=checkpointing,
        peak_bytes=mem.peak(checkpointing) if mem is not None else None,
        capacity=capacity,
    )
    parallelize(
        model,
        Dist(0, 1, 0, device, distributed=False),
        activation_checkpointing=checkpointing,
        compile=compiled,
        param_dtype=None,
        cuda_graphs=graphs,
    )
    if graphs:
        prepare_graph_grads(model)
    opt = build_optimizer(model, tcfg)
    gen = torch.Generator(device=device).manual_seed(1)
    ids = torch.randint(0, args.vocab, (accum, mb, c0.context + 1), device=device, generator=gen)
    meters = {c.mode: AcpMeter() for c in cs}

    def step(meter: AcpMeter) -> None:
        for i in range(accum):
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with autocast:
                loss = token_losses(model, {"input_ids": ids[i, :, :-1], "labels": ids[i, :, 1:]}).sum()
            meter.add(model.acp_stats())
            (loss / (accum * mb * c0.context)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=not graphs)

    # One config object per mode, made once: compiled blocks then see the same two objects round after round.
    cfgs = {c.mode: dataclasses.replace(model.config, acp=c.mode == "acp", record_acp_stats=True) for c in cs}

    def use(c: Config) -> None:
        use_config(model, cfgs[c.mode])

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warmup_s = {}
    times: dict[str, list[float]] = {c.mode: [] for c in cs}
    peak_mem: dict[str, float] = {}
    peak_reserved: dict[str, float] = {}  # the graphs' pool is reserved, not counted as allocated after recording
    with manual_gc() as collect:  # as in the trainer: garbage is collected between steps, outside the timing
        for c in cs:
            use(c)
            t0 = time.perf_counter()
            for _ in range(args.warmup):
                step(meters[c.mode])
                set_value_checks(False)  # as the trainer does after its first step
            sync()
            warmup_s[c.mode] = time.perf_counter() - t0
            meters[c.mode].reset()
        for _ in range(args.rounds):
            for c in cs:
                use(c)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                for _ in range(args.steps):
                    t = time.perf_counter()
                    step(meters[c.mode])
                    sync()
                    times[c.mode].append(time.perf_counter() - t)
                    collect(len(times[c.mode]))
                if device.type == "cuda":
                    peak_mem[c.mode] = max(peak_mem.get(c.mode, 0.0), torch.cuda.max_memory_allocated() / 2**30)
                    reserved = torch.cuda.max_memory_reserved() / 2**30
                    peak_reserved[c.mode] = max(peak_reserved.get(c.mode, 0.0), reserved)
    tokens = accum * mb * c0.context
    peak = peak_flops(device)[0]
    recs = []
    for c in cs:
        meter = meters[c.mode]
        step_s = statistics.median(times[c.mode])
        acp = acp_summary(meter.visited, meter.causal) if meter.visited is not None else {"attn_fraction": 1.0}
        tps = tokens / step_s
        rec = {
            "key": c.key,
            **dataclasses.asdict(c),
            "gates": "init" if gates is None else f"recorded:{Path(args.gates).name}",
            "vocab": args.vocab,
            "micro_batch": mb,
            "accum": accum,
            "tokens_per_step": tokens,
            "compile": compiled,
            "dtype": "bf16" if bf16 else "fp32",  # bf16 autocast on CUDA only, as in `foxacp train`
            "activation_checkpointing": checkpointing,
            "cuda_graphs": graphs,
            "memory_estimate_gib": mem.peak(checkpointing) / 2**30 if mem is not None else None,
            "warmup_s": warmup_s[c.mode],
            "rounds": args.rounds,
            "step_ms": step_s * 1e3,
            "step_ms_all": [round(t * 1e3, 2) for t in times[c.mode]],
            "tokens_per_s": tps,
            "acp_saving": acp.get("acp_saving"),
            "peak_mem_gib": peak_mem.get(c.mode),
            "peak_reserved_gib": peak_reserved.get(c.mode),
            "mfu": tps * flops_per_token(mcfg, c.context, acp["attn_fraction"]) / peak if peak else None,
            "mfu_dense_equiv": tps * flops_per_token(mcfg, c.context) / peak if peak else None,
        }
        if device.type == "cuda":
            use(c)
            rec["attention_ms"] = _attention_ms(lambda: step(AcpMeter()))
            rec["attention_share"] = rec["attention_ms"] / rec["step_ms"]
        recs.append(rec)
    return recs


def _free() -> None:
    gc.collect()
    torch.compiler.reset()  # each configuration compiles afresh (no recompile limits across them)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def gains(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """ACP over exact for every (preset, context, regime) with both: tokens/s ratio - 1, and the paper's."""
    by = {r["key"]: r for r in rows if "tokens_per_s" in r}
    out = []
    for r in rows:
        if r.get("mode") != "acp" or r["key"] not in by:
            continue
        exact = by.get(Config(r["preset"], r["context"], "exact", r["regime"]).key)
        if exact is None:
            continue
        out.append(
            {
                "preset": r["preset"],
                "context": r["context"],
                "regime": r["regime"],
                "gain": r["tokens_per_s"] / exact["tokens_per_s"] - 1.0,
                "paper_gain": PAPER_GAIN.get(r["preset"], {}).get(r["context"]),
            }
        )
    return out


def _f(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _peak(r: dict[str, Any]) -> str:
    """Peak memory: allocated, and with CUDA graphs the reserved memory too (their pool holds the activations,
    which the allocated count no longer shows after recording)."""
    if r.get("cuda_graphs") and r.get("peak_reserved_gib") is not None:
        return f"{_f(r.get('peak_mem_gib'), '.1f')} ({r['peak_reserved_gib']:.1f} reserved)"
    return _f(r.get("peak_mem_gib"), ".1f")


def markdown(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    # the rows' compute dtype (fp32 on the CPU); rows written before it was recorded: bf16, as the header said then
    dtype = "/".join(sorted({r["dtype"] for r in rows if "dtype" in r})) or "bf16"
    lines = [
        f"# Training throughput, exact vs ACP ({meta['device']})",
        "",
        f"torch {meta['torch']}, triton {meta['triton']}, commit {meta['commit']}, {meta['date']}. Settings of "
        f"`foxacp train` (compile auto, {dtype}, activation checkpointing auto, '(ckpt)' marking the rows with it; "
        f"CUDA graphs {meta.get('cuda_graphs', 'auto')}, '(graphs)' marking the rows with them); random tokens, "
        f"vocabulary {meta['vocab']}; median of {meta.get('rounds', 1)} x {meta['steps']} timed steps after "
        f"{meta['warmup']} warm-up steps, the modes of a (preset, context, gates) interleaved round by round. MFU "
        "counts the attention tiles visited; 'dense-eq.' counts all causal tiles.",
        "",
        "| preset | context | mode | gates | tokens/step | tok/s | ms/step | steps min-max | attention share | "
        "ACP saving | peak GiB | MFU | MFU dense-eq. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['context']} | {r['mode']} | {r['regime']} | error: {r['error'][:80]} |")
            continue
        lines.append(
            f"| {r['preset']} | {r['context']} | {r['mode']} | {r['gates']} | {r['tokens_per_step']} | "
            f"{r['tokens_per_s'] / 1e3:.1f}k | {r['step_ms']:.1f} | "
            f"{min(r['step_ms_all']):.0f}-{max(r['step_ms_all']):.0f} | "
            f"{_f(r.get('attention_share'), '.0%')} | "
            f"{_f(r.get('acp_saving'), '.1%')} | {_peak(r)}"
            f"{' (ckpt)' if r.get('activation_checkpointing') else ''}{' (graphs)' if r.get('cuda_graphs') else ''} | "
            f"{_f(r.get('mfu'), '.1%')} | "
            f"{_f(r.get('mfu_dense_equiv'), '.1%')} |"
        )
    lines += ["", "| preset | context | gates | ACP gain | paper |", "|---|---|---|---|---|"]
    for g in gains(rows):
        lines.append(
            f"| {g['preset']} | {g['context']} | {g['regime']} | {g['gain']:+.0%} | {_f(g['paper_gain'], '+.0%')} |"
        )
    lines += ["", "Paper gains: method.md (+12% 4k, +24% 8k, +43-45% 16k); 360M takes 760M's figures."]
    return "\n".join(lines) + "\n"


def configs(args: argparse.Namespace) -> list[Config]:
    return [
        Config(p, t, m, g) for g in args.gates_regimes for p in args.presets for t in args.contexts for m in args.modes
    ]


def pairs(cs: Sequence[Config]) -> list[list[Config]]:
    """``cs`` grouped by (preset, context, regime), in first-seen order: the modes measured side by side."""
    groups: dict[tuple[str, int, str], list[Config]] = {}
    for c in cs:
        groups.setdefault((c.preset, c.context, c.regime), []).append(c)
    return list(groups.values())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="125M and 760M at 4k and 16k, exact and ACP, init gates")
    p.add_argument("--presets", nargs="+", default=["125M", "360M", "760M"])
    p.add_argument("--contexts", nargs="+", type=int, default=[4096, 8192, 16384])
    p.add_argument("--modes", nargs="+", choices=["exact", "acp"], default=["exact", "acp"])
    p.add_argument("--gates-regimes", nargs="+", choices=["init", "recorded"], default=["init", "recorded"])
    p.add_argument("--gates", type=Path, help="recorded log forget gates (layers, B, T, H) for the recorded regime")
    p.add_argument("--vocab", type=int, default=50304, help="vocabulary (50304: a GPT-2-size BPE)")
    p.add_argument("--tokens-per-step", type=int, default=None, help="default: one micro-batch")
    p.add_argument("--micro-batch", type=int, default=None, help="sequences per micro-batch (default: the preset's)")
    p.add_argument(
        "--activation-checkpointing",
        choices=["true", "false", "auto"],
        default=None,
        help="true, false or auto (default: the preset's, auto: only where a step would not fit without it)",
    )
    p.add_argument(
        "--cuda-graphs",
        choices=["true", "false", "auto"],
        default="auto",
        help="replay the compiled blocks as CUDA graphs: true, false or auto (default: auto)",
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation included)")
    p.add_argument("--steps", type=int, default=3, help="timed steps of each mode per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds over the modes (the median of all steps is kept)")
    p.add_argument("--deadline-s", type=float, default=None, help="start no configuration after this many s")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: a result set under results/)")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, "gates_regimes" if k == "regimes" else k, v)
    if "recorded" in args.gates_regimes and args.gates is None:
        args.gates_regimes = [g for g in args.gates_regimes if g != "recorded"]
        print("no --gates file: the recorded regime is skipped")
    if min(args.warmup, args.steps, args.rounds) < 1:
        p.error("--warmup, --steps and --rounds must be at least 1")
    if args.cuda_graphs == "true" and not torch.cuda.is_available():
        p.error("--cuda-graphs true needs a CUDA device (auto or false run anywhere)")
    return args


def measured_with(args: argparse.Namespace) -> dict:
    """The arguments that change what a row measures (all but which rows and where): stored with each row, so that
    a resumed run cannot mix rows of other settings into one table."""
    keep = ("vocab", "tokens_per_step", "micro_batch", "activation_checkpointing", "cuda_graphs")
    keep += ("warmup", "steps", "rounds")
    return {k: getattr(args, k) for k in keep} | {"gates": str(args.gates.resolve()) if args.gates else None}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    meta = environment()
    meta.update(vocab=args.vocab, warmup=args.warmup, steps=args.steps, rounds=args.rounds, quick=args.quick)
    meta.update(cuda_graphs=args.cuda_graphs)
    out = args.out or result_dir(
        "throughput-quick" if args.quick else "throughput",
        date=meta["date"],
        commit=meta["commit"],
        device=device_tag(meta["device"]),
        root=RESULTS_ROOT,
    )
    out.mkdir(parents=True, exist_ok=True)
    log = out / "throughput.jsonl"
    done = {r["key"]: r for _, r in read_jsonl(log, skip_malformed=True)} if log.exists() else {}
    settings = measured_with(args)
    if other := next((r for r in done.values() if r.get("settings") != settings), None):
        raise SystemExit(
            f"{log} holds rows measured with other settings ({other.get('settings')}, now {settings}): a resumed "
            "run would mix them; choose another --out"
        )
    if done:
        print(f"{log}: {len(done)} configurations already measured are skipped")
    gates = load_log_fgate_layers(args.gates) if args.gates is not None else None
    start = time.perf_counter()
    for group in pairs(configs(args)):
        todo = [c for c in group if c.key not in done]
        if not todo:
            continue
        if args.deadline_s is not None and time.perf_counter() - start > args.deadline_s:
            print(f"deadline: {todo[0].key} and later left for the next run")
            break
        _free()
        try:
            recs = measure(todo, args, gates if todo[0].regime == "recorded" else None)
        except torch.OutOfMemoryError as e:
            error = f"out of memory: {str(e).splitlines()[0]}"
            recs = [{"key": c.key, **dataclasses.asdict(c), "error": error} for c in todo]
        for rec in recs:
            rec["settings"] = settings
            done[rec["key"]] = rec
            with open(log, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            if "error" in rec:
                print(f"{rec['key']}: {rec['error']}")
            else:
                print(f"{rec['key']}: {rec['tokens_per_s'] / 1e3:.1f}k tok/s, {rec['step_ms']:.1f} ms/step")
    wanted = {c.key for c in configs(args)}
    rows = [r for k, r in done.items() if k in wanted]
    meta["written"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    atomic_write(out / "throughput.json", json.dumps({"meta": meta, "rows": rows, "gains": gains(rows)}, indent=1))
    text = markdown(rows, meta)
    atomic_write(out / "throughput.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
