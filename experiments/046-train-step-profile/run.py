"""Where a training step's time goes: torch.profiler over a few steps of the trainer's own pieces.

    PYTHONPATH=src python experiments/046-train-step-profile/run.py --preset 125M --seq-len 16384 \
        --micro-batch 2 --vocab 50304 [--compile] [--acp] [--loss chunked|full] [--out DIR]

--loss chunked (default): the trainer's loss, FoxLM(labels=...) through foxacp.ops.linear_ce; --loss full: the
logits (B, T, V) then F.cross_entropy over a float32 copy, as the trainer did before experiment 047.

Prints the CUDA kernels grouped by what they do (attention, matmul, cross-entropy, norm, elementwise,
optimizer) and the top kernels, and writes profile.json under --out.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from foxacp.bench.throughput import ATTENTION_KERNELS
from foxacp.eval.loss import token_losses
from foxacp.model import FoxLM, ModelConfig
from foxacp.ops import set_value_checks

GROUPS = (  # first match wins: kernel-name patterns per group
    # foxacp's attention kernels by name (an earlier pattern missed fwd_kernel, dq_kernel and dkdv_kernel:
    # the logs' "attention" group is 0.8 ms where the kernels take ~98; see README)
    ("attention", "|".join(f"^{k}$" for k in ATTENTION_KERNELS)),
    ("matmul", r"gemm|sm90_xmma|cutlass|nvjet|matmul|wgmma"),
    ("cross_entropy", r"nll|log_softmax|softmax|cross_entropy"),
    ("norm", r"norm|rsqrt"),
    ("optimizer", r"adam|foreach|multi_tensor"),
    ("copy_cast", r"copy|cast|to_copy|fill"),
)


def group(name: str) -> str:
    low = name.lower()
    for g, pat in GROUPS:
        if re.search(pat, low):
            return g
    return "elementwise_other"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="125M")
    p.add_argument("--seq-len", type=int, default=16384)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--acp", action="store_true")
    p.add_argument("--loss", choices=["chunked", "full"], default="chunked")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    cfg = ModelConfig.from_preset(a.preset, vocab_size=a.vocab, acp=a.acp)
    with torch.device("cuda"):
        model = FoxLM(cfg)
    if a.compile:
        for block in model.blocks:
            block.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    B, T = a.micro_batch, a.seq_len
    ids = torch.randint(0, a.vocab, (B, T), device="cuda")
    batch = {"input_ids": ids, "labels": torch.roll(ids, -1, 1)}

    def losses():
        if a.loss == "chunked":
            return token_losses(model, batch)
        logits = model(batch["input_ids"]).flatten(0, 1).float()
        return F.cross_entropy(logits, batch["labels"].flatten(), reduction="none")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = losses().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    set_value_checks(False)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / a.steps
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(a.steps):
            step()
        torch.cuda.synchronize()
    per = defaultdict(float)
    kernels = []
    for e in prof.key_averages():
        us = e.device_time_total / a.steps if hasattr(e, "device_time_total") else e.cuda_time_total / a.steps
        if us <= 0 or e.key.startswith("ProfilerStep"):
            continue
        kernels.append((us, e.count // a.steps, e.key[:110]))
    kernels.sort(reverse=True)
    # key_averages mixes ops and kernels; keep kernel-level rows (no aten:: prefix) for the grouping.
    kern = [k for k in kernels if not k[2].startswith("aten::") and not k[2].startswith("autograd")]
    for us, _, name in kern:
        per[group(name)] += us
    total = sum(per.values())
    tok = B * T / dt
    print(
        f"\n{a.preset} T={T} B={B} vocab={a.vocab} compile={a.compile} acp={a.acp} loss={a.loss}: "
        f"{dt * 1e3:.1f} ms/step, {tok / 1e3:.1f}k tok/s, kernels {total / 1e3:.1f} ms"
    )
    for g, us in sorted(per.items(), key=lambda x: -x[1]):
        print(f"  {g:18s} {us / 1e3:8.2f} ms {100 * us / total:5.1f}%")
    print("  top kernels:")
    for us, n, name in kern[:18]:
        print(f"    {us / 1e3:7.2f} ms x{n:<4d} [{group(name)}] {name}")
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        tag = f"{a.preset}-{T}-{'acp' if a.acp else 'exact'}-{'compiled' if a.compile else 'eager'}-v{a.vocab}-{a.loss}"
        rec = {
            "args": vars(a) | {"out": str(a.out)},
            "ms_per_step": dt * 1e3,
            "tokens_per_s": tok,
            "groups_ms": {g: us / 1e3 for g, us in per.items()},
            "top": [{"ms": us / 1e3, "count": n, "name": name} for us, n, name in kern[:40]],
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
        }
        (a.out / f"profile-{tag}.json").write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
