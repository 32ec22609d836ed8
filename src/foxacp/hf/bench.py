"""Tokens/s of generate() through transformers (FoxForCausalLM) on each cache, against foxacp.generate.

    python -m foxacp.hf.bench --preset 125M --batch 1,8 --prompt-len 512 --new-tokens 256 --dtype bfloat16 --out DIR

A randomly initialised model of the preset (the speed does not depend on the weights), greedy decoding, one
warm-up call of each path first (Triton compiles, the CUDA graph is captured, torch.compile compiles). Paths:
``foxacp`` (foxacp.generate: CUDA graph on CUDA), ``foxacp-compile`` (the same with compile=True: each block
compiled, projections fused), ``dynamic`` (FoxCache: its step a CUDA graph on CUDA, captured again when it grows),
``static`` (cache_implementation="static": FoxStaticCache, its step a CUDA graph on CUDA; disable_compile) and
``static-compile`` (the same with transformers' default compile, which compiles that step). The two compiled paths
run on CUDA only, unless --compile-everywhere. Per path: tokens/s of the timed call, one generate call as a user
repeats them (foxacp's allocates its cache and captures its CUDA graph within it; the static paths keep theirs from
the warm-up call); ``agree_prefix``, the generated tokens before the first that differs from foxacp.generate's,
as a mean over rows and the minimum (a random model's logits are near-ties, so one flipped token makes every later
one differ: agreement over whole rows says little);
``ops_per_step`` and ``host_reads_per_step``, the aten ops the host dispatches and the reads back to the host
per decode step (counted over the steps between two short extra calls, untimed; transformers' loop itself reads
one flag per step to stop). With --out, a result set
(JSON and Markdown) goes to ``<out>/<date>-<commit>-hf-generate-<device>/`` (foxacp.bench.results).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

import foxacp
from foxacp.bench.report import environment
from foxacp.bench.results import device_tag, result_dir
from foxacp.model import FoxLM, ModelConfig
from foxacp.testing import HOST_READS, CountOps

from .modeling import FoxForCausalLM

PATHS = ("foxacp", "foxacp-compile", "dynamic", "static", "static-compile")
COMPILED = ("foxacp-compile", "static-compile")  # CUDA only unless --compile-everywhere


def _timed(fn: Callable[[int], torch.Tensor], n: int, device: torch.device) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn(n)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def per_step_ops(fn: Callable[[int], torch.Tensor], new_tokens: int) -> tuple[float, float]:
    """(aten ops, host reads) per decode step of fn(n new tokens): the difference of a 2-token and an up to
    12-token call over their steps (within new_tokens, so that a static cache is reused); nan below 3 tokens.
    Two, not one: ``foxacp.generate`` captures its CUDA graph from 2 new tokens on, and a 1-token call would
    leave that one-off capture in the difference."""
    short, long = 2, min(12, new_tokens)
    if long <= short:
        return float("nan"), float("nan")
    counts = []
    for n in (short, long):
        with CountOps() as counted:
            fn(n)
        counts.append(counted.ops)
    ops = (sum(counts[1].values()) - sum(counts[0].values())) / (long - short)
    reads = sum(counts[1][name] - counts[0][name] for name in HOST_READS) / (long - short)
    return ops, reads


def agree_prefix(ours: torch.Tensor, theirs: torch.Tensor) -> list[int]:
    """Per row of two (B, N) token tensors: how many leading tokens are equal."""
    same = (ours == theirs).long().cumprod(1)
    return same.sum(1).tolist()


def _paths(lm: FoxLM, hf: FoxForCausalLM, prompts: torch.Tensor, everywhere: bool) -> dict:
    """Each path as fn(new tokens) -> the generated tokens (B, n) on the CPU."""
    prompt_len = prompts.shape[1]

    def ours(n: int, compile: bool = False) -> torch.Tensor:
        return torch.stack(foxacp.generate(lm, prompts, n, compile=compile))[:, prompt_len:]

    def through_hf(**kw) -> Callable[[int], torch.Tensor]:
        def run(n: int) -> torch.Tensor:
            with torch.no_grad():
                out = hf.generate(prompts, max_new_tokens=n, min_new_tokens=n, do_sample=False, **kw)
            return out[:, prompt_len:].cpu()

        return run

    compile_config = None
    if everywhere:
        compile_config = __import__("transformers").CompileConfig()
        compile_config._compile_all_devices = True  # transformers compiles on accelerators only unless told
    return {
        "foxacp": ours,
        "foxacp-compile": lambda n: ours(n, compile=True),
        "dynamic": through_hf(),
        "static": through_hf(cache_implementation="static", disable_compile=True),
        "static-compile": through_hf(cache_implementation="static", compile_config=compile_config),
    }


def run(
    preset: str,
    batch: int,
    prompt_len: int,
    new_tokens: int,
    device: str,
    dtype: str,
    vocab_size: int = 32768,
    paths: Sequence[str] = PATHS,
    compile_everywhere: bool = False,
    attn_backend: str | None = None,
) -> list[dict]:
    """The paths on one model and batch; returns one record per path (see the module docstring)."""
    dev = torch.device(device)
    if dev.type != "cuda" and not compile_everywhere:
        paths = [p for p in paths if p not in COMPILED]  # transformers compiles on accelerators only
    torch.manual_seed(0)
    with dev:
        lm = FoxLM(ModelConfig.from_preset(preset, vocab_size=vocab_size, attn_backend=attn_backend))
    lm = lm.to(dtype=getattr(torch, dtype)).eval()
    hf = FoxForCausalLM.from_foxlm(lm).eval()
    prompts = torch.randint(0, vocab_size, (batch, prompt_len), device=dev)
    fns = _paths(lm, hf, prompts, compile_everywhere)
    records, reference = [], None
    for name in ["foxacp", *[p for p in paths if p != "foxacp"]]:
        fns[name](new_tokens)  # warm-up
        tokens, seconds = _timed(fns[name], new_tokens, dev)
        reference = tokens if reference is None else reference
        ops, reads = per_step_ops(fns[name], new_tokens)
        prefix = agree_prefix(tokens, reference)
        records.append(
            {
                "path": name,
                "preset": preset,
                "batch": batch,
                "prompt_len": prompt_len,
                "new_tokens": new_tokens,
                "dtype": dtype,
                "transformers": __import__("transformers").__version__,
                "tokens_per_s": batch * new_tokens / seconds,
                "agree_prefix_mean": sum(prefix) / len(prefix),
                "agree_prefix_min": min(prefix),
                "ops_per_step": ops,
                "host_reads_per_step": reads,
            }
        )
    return records


def table(records: Sequence[dict]) -> str:
    """A Markdown table of the records."""
    lines = [
        "| B | path | tokens/s | vs foxacp | agree prefix (mean / min of N) | aten ops / step | host reads / step |",
        "|---|---|---|---|---|---|---|",
    ]
    base = {r["batch"]: r["tokens_per_s"] for r in records if r["path"] == "foxacp"}
    for r in records:
        lines.append(
            f"| {r['batch']} | {r['path']} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / base[r['batch']]:.2f} | "
            f"{r['agree_prefix_mean']:.1f} / {r['agree_prefix_min']} of {r['new_tokens']} | "
            f"{r['ops_per_step']:.0f} | {r['host_reads_per_step']:.2f} |"
        )
    return "\n".join(lines)


def write(records: Sequence[dict], meta: dict, root: Path) -> Path:
    """The result set under root (see the module docstring); returns its folder."""
    out = result_dir(
        "hf-generate", date=meta["date"], commit=meta["commit"], device=device_tag(meta["device"]), root=root
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "hf-generate.json").write_text(json.dumps({"meta": meta, "rows": list(records)}, indent=1))
    note = f"{meta['preset']} {meta['dtype']}, random weights, {meta['device']}, transformers {meta['transformers']}"
    (out / "hf-generate.md").write_text(f"# generate() through transformers\n\n{note}\n\n{table(records)}\n")
    return out


def _ints(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m foxacp.hf.bench", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="125M")
    p.add_argument("--batch", type=_ints, default=[1], help="batch sizes, e.g. 1,8")
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    p.add_argument("--vocab-size", type=int, default=32768)
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {PATHS}")
    p.add_argument("--compile-everywhere", action="store_true", help="the compiled paths off CUDA too")
    p.add_argument("--attn-backend", choices=("triton", "torch"), default=None, help="default: auto")
    p.add_argument("--out", type=Path, default=None, help="root of the result set folder")
    a = p.parse_args(argv)
    paths = [x for x in a.paths.split(",") if x]
    if unknown := set(paths) - set(PATHS):
        p.error(f"--paths: unknown {sorted(unknown)}; expected a subset of {PATHS}")
    records = []
    for batch in a.batch:
        records += run(
            a.preset,
            batch,
            a.prompt_len,
            a.new_tokens,
            a.device,
            a.dtype,
            a.vocab_size,
            paths,
            a.compile_everywhere,
            a.attn_backend,
        )
    meta = environment(device=a.device) | {
        "preset": a.preset,
        "dtype": a.dtype,
        "transformers": records[0]["transformers"],
    }
    meta["attn_backend"] = a.attn_backend or "auto"
    if a.out is not None:
        print(f"results in {write(records, meta, a.out)}")
    print(json.dumps(records))
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
