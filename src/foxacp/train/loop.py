"""The training loop: one function, the same on CPU, one GPU, or many GPUs under torchrun (FSDP2).

Each optimizer step takes one global batch of ``global_batch_tokens`` tokens from the data loader; this
rank's rows are split into micro-batches of ``micro_batch_size`` sequences whose gradients accumulate.
Every micro-batch loss is a sum over tokens divided by the number of target tokens in the whole global
batch (times the world size, which FSDP's gradient averaging divides out), so the gradient is the mean
over the global batch whatever the number of devices.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from foxacp.data import (
    IGNORE_INDEX,
    Batch,
    BatchLoader,
    build_tokenizer,
    load_corpus,
    prepare_tokens,
    validation_batches,
)
from foxacp.model import FoxLM, flops_per_token
from foxacp.ops import set_value_checks

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig, build_model_config
from .distributed import Dist, all_reduce_sum, barrier, cleanup, init_distributed, parallelize
from .metrics import AcpMeter, MetricsLogger, acp_summary, peak_flops, position_buckets
from .optim import build_optimizer, lr_at, set_lr


def split_batch(batch: Batch, n: int) -> list[Batch]:
    """Split a batch's rows into ``n`` equal micro-batches, re-basing ``cu_seqlens`` (row ends are
    always document boundaries, so every micro-batch's offsets start at 0 and end at its B*T)."""
    ids, labels = batch["input_ids"], batch["labels"]
    B, T = ids.shape
    if B % n:
        raise ValueError(f"{B} rows do not split into {n} micro-batches")
    per = B // n
    cu = batch.get("cu_seqlens")
    out = []
    for i in range(n):
        mb: Batch = {"input_ids": ids[i * per : (i + 1) * per], "labels": labels[i * per : (i + 1) * per]}
        if cu is not None:
            lo, hi = i * per * T, (i + 1) * per * T
            sub = cu[(cu >= lo) & (cu <= hi)] - lo
            mb["cu_seqlens"] = sub.to(torch.int32)
            mb["max_seqlen"] = int((sub[1:] - sub[:-1]).max())
        out.append(mb)
    return out


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def token_losses(model: nn.Module, batch: Batch) -> Tensor:
    """Per-token cross-entropy (B, T) float32, 0 where the label is IGNORE_INDEX."""
    logits = model(batch["input_ids"], cu_seqlens=batch.get("cu_seqlens"), max_seqlen=batch.get("max_seqlen"))
    labels = batch["labels"]
    loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    return loss.view(labels.shape)


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[Batch], d: Dist, autocast, buckets: int) -> dict[str, Any]:
    """Mean held-out loss over ``batches`` (this rank's micro-batches, summed over ranks) and the loss by
    token position in ``buckets`` spans of the context (position within the row)."""
    model.eval()
    T = batches[0]["input_ids"].shape[1]
    pos_sum = torch.zeros(T, dtype=torch.float64, device=d.device)
    pos_count = torch.zeros(T, dtype=torch.float64, device=d.device)
    for batch in batches:
        batch = to_device(batch, d.device)
        with autocast:
            loss = token_losses(model, batch)
        mask = batch["labels"] != IGNORE_INDEX
        pos_sum += (loss.double() * mask).sum(0)
        pos_count += mask.sum(0)
    all_reduce_sum(pos_sum, d)
    all_reduce_sum(pos_count, d)
    model.train()
    loss = (pos_sum.sum() / pos_count.sum()).item()
    return {
        "loss": loss,
        "eval_tokens": int(pos_count.sum().item()),
        **position_buckets(pos_sum, pos_count, buckets),
    }


def make_data(cfg: TrainConfig, d: Dist):
    """(tokenizer, train loader of global batches (this rank's rows), validation micro-batches).

    The train loader's batch is the whole global batch (``global_batch_tokens / seq_len`` rows), so the
    data order does not depend on the world size; the validation set is the first ``eval_batches``
    batches of ``world_size * micro_batch_size`` held-out windows. Rank 0 builds the token cache first.
    """
    global_rows = cfg.global_batch_tokens // cfg.seq_len
    cache_dir = Path(cfg.cache_dir).expanduser()
    if not d.is_main:
        barrier(d)
    docs = load_corpus(cfg.corpus)
    tokenizer = build_tokenizer(cfg.tokenizer, corpus=docs, cache_dir=cache_dir)
    cache = prepare_tokens(docs, tokenizer, cache_dir, progress=d.is_main and cfg.progress)
    if d.is_main:
        barrier(d)
    train = BatchLoader(
        cache.train,
        cfg.seq_len,
        global_rows,
        seed=cfg.seed,
        rank=d.rank,
        world_size=d.world_size,
        packing=cfg.pack,
    )
    val = validation_batches(
        cache.val,
        cfg.seq_len,
        d.world_size * cfg.micro_batch_size,
        cfg.eval_batches,
        rank=d.rank,
        world_size=d.world_size,
        packing=cfg.pack,
    )
    return tokenizer, train, val


def _format_line(step: int, total: int, rec: dict[str, Any]) -> str:
    parts = [
        f"step {step}/{total}",
        f"loss {rec['loss']:.4f}",
        f"lr {rec['lr']:.2e}",
        f"gnorm {rec['grad_norm']:.3f}",
        f"{rec['tokens_per_s']:,.0f} tok/s",
    ]
    if rec.get("mfu") is not None:
        parts.append(f"mfu {100 * rec['mfu']:.1f}%")
    if "acp_saving" in rec:
        layers = " ".join(f"{100 * x:.0f}" for x in rec["acp_layer"])
        parts.append(f"acp {100 * rec['acp_saving']:.1f}% [{layers}]")
    return " | ".join(parts)


def train(cfg: TrainConfig, *, resume: str | Path | None = None) -> dict[str, Any]:
    """Train per ``cfg``; return a summary: final loss (last logging window), tokens/s (this invocation's
    average, evaluation and checkpoints excluded), ACP saving, paths.

    ``resume``: a run directory (its latest checkpoint) or a checkpoint directory to continue from; the
    continued run's losses match an uninterrupted run's step for step. Initialises and tears down the
    process group when launched by torchrun.

    Raises:
        ConfigError: inconsistent batch settings or a bad model override.
        CheckpointError: a missing, corrupt or mismatched checkpoint to resume from.
    """
    d = init_distributed(cfg.device)
    checks = set_value_checks(True)
    try:
        summary = _train(cfg, resume, d)
        barrier(d)  # every rank done (rank 0 writes last) before any tears the process group down
        return summary
    finally:
        set_value_checks(checks)
        cleanup(d)


def _train(cfg: TrainConfig, resume: str | Path | None, d: Dist) -> dict[str, Any]:
    if cfg.dtype not in ("bf16", "fp32"):
        raise ConfigError(f"dtype must be bf16 or fp32, got {cfg.dtype!r}")
    accum = cfg.grad_accum_steps(d.world_size)
    total = cfg.total_steps
    run_dir = cfg.run_dir
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.json")

    tokenizer, train_loader, val_batches = make_data(cfg, d)
    mcfg = build_model_config(cfg, tokenizer.vocab_size)

    torch.manual_seed(cfg.seed)
    with torch.device(d.device):
        model = FoxLM(mcfg)
    n_params = sum(p.numel() for p in model.parameters())
    bf16 = d.device.type == "cuda" and cfg.dtype == "bf16"
    if d.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    parallelize(
        model,
        d,
        activation_checkpointing=cfg.activation_checkpointing,
        compile=cfg.compile,
        param_dtype=torch.bfloat16 if bf16 else None,
    )
    # Without FSDP, bf16 comes from autocast; with FSDP, from its MixedPrecisionPolicy.
    use_autocast = bf16 and not d.distributed
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_autocast else contextlib.nullcontext()
    optimizer = build_optimizer(model, cfg)

    step, tokens = 0, 0
    if resume is not None:
        state = load_checkpoint(resume, model, optimizer, model_config=mcfg, d=d)
        step, tokens = state["step"], state["tokens"]
        try:
            train_loader.load_state_dict(state["loader"])
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"checkpoint {state['dir']} is for another data stream: {e}") from None

    peak, peak_source = peak_flops(d.device, cfg.peak_tflops)
    logger = MetricsLogger(run_dir, enabled=d.is_main, tensorboard=cfg.tensorboard, fresh=resume is None)
    logger.log(
        {
            "kind": "start",
            "step": step,
            "n_params": n_params,
            "world_size": d.world_size,
            "device": str(d.device),
            "grad_accum": accum,
            "peak": peak_source,
            "resumed_from": str(state["dir"]) if resume is not None else None,
            "train_config": cfg.to_dict(),
            "model_config": {k: getattr(mcfg, k) for k in mcfg.__dataclass_fields__},
        }
    )
    say = tqdm.write if d.is_main else (lambda *_: None)
    say(
        f"foxacp: {n_params / 1e6:.2f}M params, {d.world_size} x {d.device.type}, "
        f"{total} steps of {cfg.global_batch_tokens} tokens ({accum} micro-batches of "
        f"{cfg.micro_batch_size} x {cfg.seq_len} per device), run dir {run_dir}"
        + (f", resumed at step {step}" if step else "")
    )

    meter = AcpMeter()
    window_loss = torch.zeros((), dtype=torch.float64, device=d.device)
    window_steps, window_start = 0, time.perf_counter()
    first_step, train_time = step, 0.0
    last: dict[str, Any] = {}
    last_eval: dict[str, Any] | None = None
    bar = tqdm(total=total, initial=step, disable=not (d.is_main and cfg.progress), desc="train", dynamic_ncols=True)
    model.train()
    while step < total:
        micro = split_batch(next(train_loader), accum)
        n_targets = torch.tensor(float(sum(int((mb["labels"] != IGNORE_INDEX).sum()) for mb in micro)), device=d.device)
        all_reduce_sum(n_targets, d)
        lr = lr_at(tokens + cfg.global_batch_tokens, cfg)
        set_lr(optimizer, lr)
        step_loss = torch.zeros((), dtype=torch.float64, device=d.device)
        for mb in micro:
            mb = to_device(mb, d.device)
            with autocast:
                loss_sum = token_losses(model, mb).sum()
            meter.add(model.acp_stats())
            (loss_sum * (d.world_size / n_targets)).backward()
            step_loss += loss_sum.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step == first_step + 1:
            set_value_checks(False)  # the gates were checked once; later checks would sync every layer
        tokens += cfg.global_batch_tokens
        window_loss += all_reduce_sum(step_loss, d) / n_targets
        window_steps += 1
        bar.update(1)

        if step % cfg.log_every == 0 or step == total:
            if d.device.type == "cuda":
                torch.cuda.synchronize(d.device)
            elapsed = time.perf_counter() - window_start
            train_time += elapsed
            gn = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            rec: dict[str, Any] = {
                "kind": "train",
                "step": step,
                "tokens": tokens,
                "loss": window_loss.item() / window_steps,
                "lr": lr,
                "grad_norm": gn.item(),
                "tokens_per_s": window_steps * cfg.global_batch_tokens / elapsed,
            }
            if meter.visited is not None:
                visited, causal = (all_reduce_sum(t.to(d.device), d) for t in (meter.visited, meter.causal))
                rec.update(acp_summary(visited, causal))
            fraction = rec.get("attn_fraction", 1.0)
            flops = flops_per_token(mcfg, cfg.seq_len, fraction)
            rec["mfu"] = rec["tokens_per_s"] * flops / (peak * d.world_size) if peak else None
            logger.log(rec)
            say(_format_line(step, total, rec))
            bar.set_postfix(loss=f"{rec['loss']:.3f}")
            if not math.isfinite(rec["loss"]):
                raise FloatingPointError(f"loss is {rec['loss']} at step {step}")
            last = rec
            meter.reset()
            window_loss.zero_()
            window_steps, window_start = 0, time.perf_counter()

        done = step == total
        paused = time.perf_counter()  # evaluation and checkpoints do not count as training time
        if cfg.eval_every > 0 and (step % cfg.eval_every == 0 or done):
            ev = evaluate(model, val_batches, d, autocast, cfg.eval_buckets)
            last_eval = {"kind": "eval", "step": step, "tokens": tokens, **ev}
            logger.log(last_eval)
            say(f"eval step {step}: loss {ev['loss']:.4f} over {ev['eval_tokens']} tokens")
        if (cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0) or done:
            path = save_checkpoint(
                run_dir,
                step,
                model,
                optimizer,
                tokens=tokens,
                loader_state=train_loader.state_dict(),
                train_config=cfg,
                model_config=mcfg,
                d=d,
                keep=cfg.ckpt_keep,
            )
            say(f"checkpoint {path}")
        window_start += time.perf_counter() - paused
    bar.close()
    logger.close()
    return {
        "run_dir": str(run_dir),
        "log": str(logger.path),
        "steps": step,
        "tokens": tokens,
        "final_loss": last.get("loss"),
        "tokens_per_s": (step - first_step) * cfg.global_batch_tokens / train_time if train_time else None,
        "mfu": last.get("mfu"),
        "acp_saving": last.get("acp_saving"),
        "eval_loss": last_eval["loss"] if last_eval else None,
        "n_params": n_params,
    }
