"""A compiled training step with each block's forward and backward replayed as CUDA graphs (torch.compile's
"reduce-overhead"), against today's compiled blocks: the same gradients? how much faster, exact and ACP?

    PYTHONPATH=src python experiments/068-train-host-cost/graphs.py --preset 360M --seq-len 4096 --micro-batch 4

One model, one batch. Per compile mode and attention mode: the loss and gradient norm at the initial weights
(no optimizer step), then the median wall time of --steps full steps (forward, backward, fused AdamW). The
first mode's gradients are the reference of the second's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from foxacp.bench.decode import use_config
from foxacp.eval.loss import token_losses
from foxacp.model import FoxLM, ModelConfig
from foxacp.ops import set_value_checks


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="360M")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = FoxLM(ModelConfig.from_preset(a.preset, vocab_size=a.vocab))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, a.vocab, (a.micro_batch, a.seq_len), device="cuda")
    batch = {"input_ids": ids, "labels": torch.roll(ids, -1, 1)}
    cfgs = {acp: dataclasses.replace(model.config, acp=acp) for acp in (False, True)}
    rows, ref = [], {}
    for mode in ("default", "reduce-overhead"):
        torch.compiler.reset()
        for block in model.blocks:
            block._compiled_call_impl = None
            block.compile(mode=None if mode == "default" else mode)
        for acp, cfg in cfgs.items():
            use_config(model, cfg)
            model.load_state_dict(init)
            opt.state.clear()

            def step(update: bool = True) -> torch.Tensor:
                torch.compiler.cudagraph_mark_step_begin()
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = token_losses(model, batch).mean()
                loss.backward()
                if update:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                return loss.detach()

            set_value_checks(True)
            for _ in range(3):  # compile and record (the gradients of the last call are kept, no update)
                opt.zero_grad(set_to_none=True)
                loss = step(update=False)
            grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])
            check = {"loss": loss.item(), "grad_norm": grads.norm().item()}
            if acp in ref:
                check["grad_rel_diff"] = ((grads - ref[acp]).norm() / ref[acp].norm()).item()
            else:
                ref[acp] = grads
            opt.zero_grad(set_to_none=True)
            set_value_checks(False)
            for _ in range(3):
                step()
            wall = []
            for _ in range(a.steps):
                torch.cuda.synchronize()
                t = time.perf_counter()
                step()
                torch.cuda.synchronize()
                wall.append(1e3 * (time.perf_counter() - t))
            row = {"mode": mode, "acp": acp, "ms": sorted(wall)[len(wall) // 2], "min_max": [min(wall), max(wall)]}
            rows.append(row | check | {"peak_gib": torch.cuda.max_memory_allocated() / 2**30})
            torch.cuda.reset_peak_memory_stats()
            print(rows[-1], flush=True)
    tok = a.micro_batch * a.seq_len
    print(f"\n{a.preset} T={a.seq_len} B={a.micro_batch}, {torch.cuda.get_device_name()}")
    print("| compile mode | attention | ms/step (min-max) | tok/s | loss | grad rel. diff | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["min_max"]
        diff = f"{r['grad_rel_diff']:.1e}" if "grad_rel_diff" in r else "ref"
        print(
            f"| {r['mode']} | {'acp' if r['acp'] else 'exact'} | {r['ms']:.1f} ({lo:.0f}-{hi:.0f}) "
            f"| {tok / r['ms'] * 1e3 / 1e3:.1f}k | {r['loss']:.4f} | {diff} | {r['peak_gib']:.1f} |"
        )
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / f"graphs-{a.preset}-{a.seq_len}.json").write_text(
            json.dumps({"args": vars(a) | {"out": str(a.out)}, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
