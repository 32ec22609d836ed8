"""The chunked LM head + cross-entropy on the device: errors against float64 full logits, next to the errors of the
path it replaces (bf16 logits, float32 copy, F.cross_entropy), and the time and peak memory of each.

    PYTHONPATH=src python experiments/047-train-speed/check_ce.py [--rows 32768] [--d 768] [--vocab 50304 320]
        [--device cuda] [--out DIR]

Rows: one 125M micro-batch at 16k (2 x 16384 tokens). Under bf16 autocast (float32 hidden states and head, as in
the trainer), gradient of a random per-token weighting. Pass: every error of the chunked path within 1.5x (+1e-4)
of the full path's. Writes ce_check.json under --out; prints a table last.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from foxacp.ops.linear_ce import linear_cross_entropy, linear_cross_entropy_reference
from foxacp.testing import rel_err


def run(fn, hidden, weight, labels, grad, autocast):
    h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    with torch.autocast(hidden.device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = fn(h, w, labels)
    (loss * grad).sum().backward()
    return loss.detach(), h.grad, w.grad


def timed(fn, device: torch.device) -> tuple[float, float | None]:
    """(median ms, peak GiB above the start) of fn(); triton's do_bench on CUDA, 3 calls on the CPU."""
    if device.type != "cuda":
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return sorted(times)[1], None
    from triton.testing import do_bench

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    return do_bench(fn, warmup=50, rep=300, return_mode="median"), peak


def check(rows: int, d: int, vocab: int, device: torch.device, seed: int = 0) -> dict:
    gen = torch.Generator(device=device).manual_seed(seed)
    hidden = torch.randn(rows, d, device=device, generator=gen)
    weight = torch.randn(vocab, d, device=device, generator=gen) * 0.02 * 30  # logits of a few nats
    labels = torch.randint(0, vocab, (rows,), device=device, generator=gen)
    labels[::97] = -100
    grad = torch.rand(rows, device=device, generator=gen)
    ref = run(linear_cross_entropy_reference, hidden.double(), weight.double(), labels, grad.double(), False)
    bf16 = device.type == "cuda"
    full = run(linear_cross_entropy_reference, hidden, weight, labels, grad, bf16)
    chunked = run(linear_cross_entropy, hidden, weight, labels, grad, bf16)
    names = ("loss", "dhidden", "dweight")
    rec = {"rows": rows, "d": d, "vocab": vocab, "autocast_bf16": bf16}
    for n, c, f, r in zip(names, chunked, full, ref, strict=True):
        rec[f"err_{n}_chunked"] = rel_err(c, r)
        rec[f"err_{n}_full"] = rel_err(f, r)
    rec["pass"] = all(rec[f"err_{n}_chunked"] <= 1.5 * rec[f"err_{n}_full"] + 1e-4 for n in names)
    del ref
    for name, fn in (("full", linear_cross_entropy_reference), ("chunked", linear_cross_entropy)):
        rec[f"ms_{name}"], rec[f"peak_gib_{name}"] = timed(
            lambda fn=fn: run(fn, hidden, weight, labels, grad, bf16), device
        )
    return rec


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=32768)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--vocab", type=int, nargs="+", default=[50304, 320])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    recs = [check(a.rows, a.d, v, torch.device(a.device)) for v in a.vocab]
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "ce_check.json").write_text(json.dumps(recs, indent=1))
    print(
        f"{'vocab':>6} {'pass':>5} {'loss c/f':>17} {'dh c/f':>17} {'dw c/f':>17} {'ms full':>8} {'ms chunk':>8}"
        f" {'GiB full':>8} {'GiB chunk':>9}"
    )
    for r in recs:
        pair = lambda n: f"{r[f'err_{n}_chunked']:.1e}/{r[f'err_{n}_full']:.1e}"  # noqa: E731
        gib = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        print(
            f"{r['vocab']:>6} {str(r['pass']):>5} {pair('loss'):>17} {pair('dhidden'):>17} {pair('dweight'):>17}"
            f" {r['ms_full']:8.2f} {r['ms_chunked']:8.2f} {gib(r['peak_gib_full']):>8} {gib(r['peak_gib_chunked']):>9}"
        )
    return recs


if __name__ == "__main__":
    main()
