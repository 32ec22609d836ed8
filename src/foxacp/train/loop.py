"""The training loop: one function, the same on CPU, one GPU, or many GPUs under torchrun (FSDP2).

Each optimizer step takes one global batch of ``global_batch_tokens`` tokens from the data loader; this
rank's rows are split into micro-batches of ``micro_batch_size`` sequences whose gradients accumulate.
Every micro-batch loss is a sum over tokens divided by the number of target tokens in the whole global
batch (times the world size, which FSDP's gradient averaging divides out), so the gradient is the mean
over the global batch whatever the number of devices.

Before a step's update is applied its loss and gradient norm are checked on the host (one sync per
step, together with the stop flag of every rank): a non-finite one stops the run with
:class:`DivergedError`, after checkpointing the last good state. SIGINT/SIGTERM stop it after the current
step with a checkpoint (see :mod:`foxacp.train.stop`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from foxacp.data import IGNORE_INDEX, Batch, BatchLoader, make_datasets
from foxacp.data.pipeline import check_corpus
from foxacp.data.tokenizer import RUN_TOKENIZER, Tokenizer, save_tokenizer
from foxacp.eval import evaluate, token_losses
from foxacp.io import REPO, git_commit
from foxacp.model import FoxLM, flops_per_token
from foxacp.ops import set_value_checks

from .checkpoint import (
    CheckpointError,
    branch_off,
    checkpoint_root,
    load_checkpoint,
    read_meta,
    resolve_checkpoint,
    save_checkpoint,
)
from .collect import manual_gc
from .config import ConfigError, TrainConfig, build_model_config
from .distributed import (
    Dist,
    all_reduce_max,
    all_reduce_sum,
    barrier,
    broadcast_object,
    checkpoint_blocks,
    cleanup,
    compile_block,
    compile_wanted,
    graphs_wanted,
    init_distributed,
    parallelize,
    prepare_graph_grads,
    uncompile,
)
from .memory import StepMemory, checkpointing_wanted, describe, device_capacity, step_memory
from .metrics import SUPERSEDED_LOG, AcpMeter, MetricsLogger, acp_summary, peak_flops
from .optim import apply_settings, build_optimizer, lr_at, set_lr
from .passkey_mix import PasskeyMixer
from .rundir import RunDirError, RunLock, prepare_run_dir, remove_run_files
from .stop import DivergedError, StopRequest


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


def attention_spans(micro: list[Batch]) -> tuple[float, float]:
    """(sum of L^2, sum of L) over the spans L that attention runs over in these micro-batches: every row, or
    with packing every document (``cu_seqlens``). Their ratio is the seq_len that ``flops_per_token`` wants."""
    sq = n = 0.0
    for mb in micro:
        if "cu_seqlens" in mb:
            lens = torch.diff(mb["cu_seqlens"].cpu()).double()
        else:
            lens = torch.full((mb["input_ids"].shape[0],), float(mb["input_ids"].shape[1]), dtype=torch.float64)
        sq, n = sq + float((lens * lens).sum()), n + float(lens.sum())
    return sq, n


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


# Held-out windows per evaluation batch (``TrainConfig.eval_batches`` counts these): a fixed number, so that the
# validation set does not change with the micro-batch size or the number of devices (a resume may change both).
EVAL_WINDOWS = 8


def make_data(cfg: TrainConfig, d: Dist):
    """(tokenizer, train loader of global batches (this rank's rows), validation micro-batches).

    The train loader's batch is the whole global batch (``global_batch_tokens / seq_len`` rows), so the
    data order does not depend on the world size; the validation set is the first ``eval_batches *
    EVAL_WINDOWS`` held-out windows (none when ``eval_every`` is 0), whatever the number of devices and the
    micro-batch size: it is cut into batches of ``world_size * micro_batch_size`` windows, the last filled up
    with windows whose labels are all ignored. Rank 0 builds the token cache first. With
    ``passkey_fraction`` the train loader is a PasskeyMixer over it.
    """
    if not d.is_main:
        barrier(d)
    windows, rows = cfg.eval_batches * EVAL_WINDOWS, d.world_size * cfg.micro_batch_size
    data = make_datasets(
        cfg.corpus,
        cfg.tokenizer,
        Path(cfg.cache_dir),
        cfg.seq_len,
        cfg.global_batch_tokens // cfg.seq_len,
        val_batches=-(-windows // rows) if cfg.eval_every > 0 else 0,
        val_batch_size=rows,
        packing=cfg.pack,
        seed=cfg.seed,
        rank=d.rank,
        world_size=d.world_size,
        progress=d.is_main and cfg.progress,
    )
    if d.is_main:
        barrier(d)
    for i, batch in enumerate(data.val):  # the windows past the set's end only fill up its last batch
        first = i * rows + d.rank * cfg.micro_batch_size  # global index of this rank's first window in batch i
        past = torch.arange(first, first + batch["labels"].shape[0]) >= windows
        batch["labels"][past] = IGNORE_INDEX
    if cfg.passkey_fraction > 0:
        mixer = PasskeyMixer(data.train, data.tokenizer, fraction=cfg.passkey_fraction, seed=cfg.seed)
        data = data._replace(train=mixer)
    return data


def train(cfg: TrainConfig, *, resume: str | Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train per ``cfg``; return a summary: final loss (last logging window), tokens/s (this invocation's
    average, evaluation and checkpoints excluded), ACP saving, paths, and ``stopped_by`` (the signal's name
    when SIGINT/SIGTERM stopped the run early, else None).

    ``resume``: a run directory (its latest checkpoint) or a checkpoint directory to continue from; the
    continued run's losses match an uninterrupted run's step for step. Settings that differ from the
    checkpoint's are logged ("resume_changes" in the start record); its preset may not change.
    ``overwrite``: replace a run already in ``cfg.run_dir`` (without it, and unless ``resume`` points into
    that run, such a directory is refused). The run directory is locked for the whole run. Initialises and
    tears down the process group when launched by torchrun.

    Raises:
        ConfigError: inconsistent batch settings, a bad model override, or another preset on resume.
        CheckpointError: a missing, corrupt or mismatched checkpoint to resume from.
        RunDirError: the run directory holds another run or is locked by a live process.
        DivergedError: a step's loss or gradient norm is not finite ("loss is NaN at step N"); the last
            good state is checkpointed first.
        OSError: the run or checkpoint directory cannot be written (checked before training).
    """
    d = init_distributed(cfg.device)
    checks = set_value_checks(True)
    lock = None
    try:
        lock, changes, replace = _on_main(d, lambda: _claim_run_dir(cfg, resume, overwrite, d)) or (None, {}, False)
        summary = _train(cfg, resume, changes, replace, d)
        barrier(d)  # every rank done (rank 0 writes last) before any tears the process group down
        return summary
    finally:
        if lock is not None:
            lock.release()
        set_value_checks(checks)
        cleanup(d)


def say(text: str) -> None:
    """Print a line above the progress bar, best-effort: when stdout's reader has gone (``| head``), the run goes
    on with its output sent to /dev/null (its log and checkpoints are what count), instead of dying mid-step."""
    try:
        tqdm.write(text)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # later writes, and the final flush at exit, succeed
        os.close(devnull)


def _on_main(d: Dist, fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0 (None elsewhere); when it raises there, every other rank raises too."""
    result, error = None, None
    if d.is_main:
        try:
            result = fn()
        except Exception as e:
            error = e
    failed = broadcast_object(None if error is None else f"{type(error).__name__}: {error}", d)
    if error is not None:
        raise error
    if failed is not None:
        raise RunDirError(f"rank 0 could not start the run: {failed}")
    return result


def _claim_run_dir(cfg: TrainConfig, resume: str | Path | None, overwrite: bool, d: Dist):
    """Rank 0's start-up: validate what can be validated without data, lock and prepare the run directory.
    Returns (the lock, the settings that differ from the resumed checkpoint's, whether a run there is to be
    replaced). config.json is written, and a replaced run's files deleted, once the run is set up (``_setup``): a
    resume refused there leaves the run's config as it was, and a start that fails leaves the old run whole."""
    cfg.grad_accum_steps(d.world_size)
    build_model_config(cfg)
    check_corpus(cfg.corpus)
    # cuda_graphs=true where the device, compile or checkpointing settings already rule them out (auto
    # checkpointing is decided in _setup, which asks graphs_wanted again)
    graphs_wanted(
        cfg.cuda_graphs,
        d.device,
        compiled=compile_wanted(cfg.compile, d.device),
        distributed=d.distributed,
        checkpointing=cfg.activation_checkpointing is True,
    )
    changes = _resume_changes(cfg, resume) if resume is not None else {}
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock.acquire(run_dir)
    try:
        replace = prepare_run_dir(run_dir, resume=None if resume is None else Path(resume), overwrite=overwrite)
    except BaseException:
        lock.release()
        raise
    return lock, changes, replace


def _resume_changes(cfg: TrainConfig, resume: str | Path) -> dict[str, list[Any]]:
    """{field: [checkpoint's value, this run's]} for every TrainConfig field that differs. Raises
    ConfigError when the preset differs (a resumed run keeps its preset; fields change with overrides) or when the
    checkpoint's step lies past the run's length."""
    ckpt = resolve_checkpoint(resume)
    meta = read_meta(ckpt, verify=False)
    saved = meta["train_config"]
    if saved.get("preset") != cfg.preset:
        raise ConfigError(
            f"checkpoint {ckpt} is of a {saved.get('preset')!r} run; a resumed run keeps its preset "
            f"(got {cfg.preset!r}); change single settings with --set"
        )
    if meta["step"] > cfg.total_steps:
        raise ConfigError(
            f"checkpoint {ckpt} is at step {meta['step']}, past this run's {cfg.total_steps} steps; a resume continues "
            "a run: set steps (or max_tokens) beyond it"
        )
    before = TrainConfig.from_dict(saved).to_dict()
    return {k: [before[k], v] for k, v in cfg.to_dict().items() if before[k] != v}


@dataclass
class Session:
    """What the loop's functions share: the run's config and process, its model, optimizer and data, and
    the position in the run (``step``, ``tokens``)."""

    cfg: TrainConfig
    d: Dist
    mcfg: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: BatchLoader | PasskeyMixer
    val_batches: list[Batch]
    autocast: contextlib.AbstractContextManager
    accum: int
    logger: MetricsLogger
    say: Callable[[str], None]
    n_params: int
    peak: float | None  # per-device peak FLOP/s for MFU, None when unknown
    compiled: bool  # the blocks are compiled (until a failed compilation falls back to eager)
    checkpointing: bool  # the blocks recompute their activations in the backward
    graphs: bool  # the compiled blocks replay as CUDA graphs (``graphs_wanted``)
    memory: StepMemory | None  # the estimate activation_checkpointing="auto" decided on (None: not measured)
    stop: StopRequest = field(default_factory=StopRequest)
    step: int = 0
    tokens: int = 0
    checkpointed: int = -1  # the step of the last checkpoint this run wrote (or resumed from)


@dataclass
class StepResult:
    """What one optimizer step reports, summed over ranks and on the host."""

    loss: float  # mean over the global batch's target tokens
    grad_norm: float
    lr: float
    stop: bool  # a rank got SIGINT/SIGTERM
    spans: tuple[float, float] = (0.0, 0.0)  # this rank's (sum of L^2, sum of L) over the attention spans L


class Window:
    """One logging window: summed step losses, ACP tile counts, and its training time (evaluation and
    checkpoints paused out of it)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.meter = AcpMeter()
        self.loss, self.steps = 0.0, 0
        self.spans = [0.0, 0.0]
        self.start = time.perf_counter()
        self.train_time = 0.0  # over every closed window of this invocation

    def add(self, r: StepResult) -> None:
        self.loss += r.loss
        self.steps += 1
        self.spans = [a + b for a, b in zip(self.spans, r.spans, strict=True)]

    def close(self) -> float:
        """End the window: its training seconds (the device drained first)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - self.start
        self.train_time += elapsed
        return elapsed

    def reset(self) -> None:
        self.meter.reset()
        self.loss, self.steps = 0.0, 0
        self.spans = [0.0, 0.0]
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.start += time.perf_counter() - t


def _train(
    cfg: TrainConfig, resume: str | Path | None, changes: dict[str, list[Any]], replace: bool, d: Dist
) -> dict[str, Any]:
    s = _setup(cfg, resume, changes, replace, d)
    first_step, total = s.step, cfg.total_steps
    window = Window(d.device)
    last: dict[str, Any] = {}
    last_eval: dict[str, Any] | None = None
    bar = tqdm(total=total, initial=s.step, disable=not (d.is_main and cfg.progress), desc="train", dynamic_ncols=True)
    s.model.train()
    with s.stop, manual_gc() as collect:
        while s.step < total:
            r = _step(s, window.meter, first_step)
            window.add(r)
            bar.update(1)
            done = s.step == total
            save = (cfg.ckpt_every > 0 and s.step % cfg.ckpt_every == 0) or done or r.stop
            # A checkpoint ends a logging window too: a run resumed from it then logs what an uninterrupted one does
            # (the window's sums are not in the checkpoint).
            if s.step % cfg.log_every == 0 or save:
                last = _log_window(s, window, r)
                bar.set_postfix(loss=f"{last['loss']:.3f}")
            with window.paused():
                collect(s.step)
                if cfg.eval_every > 0 and (s.step % cfg.eval_every == 0 or done):
                    last_eval = _evaluate(s)
                if save:
                    _checkpoint(s)
            if r.stop and not done:  # a signal during the last step: the run is complete, not stopped
                s.logger.log({"kind": "stop", "step": s.step, "signal": s.stop.signal_name})
                s.say(f"stopped by {s.stop.signal_name} at step {s.step}; resume with --resume --out {cfg.run_dir}")
                break
    bar.close()
    s.logger.close()
    trained = s.step - first_step
    return {
        "run_dir": str(cfg.run_dir),
        "log": str(s.logger.path),
        "steps": s.step,
        "tokens": s.tokens,
        "final_loss": last.get("loss"),
        "tokens_per_s": trained * cfg.global_batch_tokens / window.train_time if window.train_time else None,
        "mfu": last.get("mfu"),
        "acp_saving": last.get("acp_saving"),
        "eval_loss": last_eval["loss"] if last_eval else None,
        "n_params": s.n_params,
        "stopped_by": s.stop.signal_name if s.step < total else None,
    }


def _setup(
    cfg: TrainConfig, resume: str | Path | None, changes: dict[str, list[Any]], replace: bool, d: Dist
) -> Session:
    """Data, model (parallelised), optimizer, the resumed state, and the start record of the log."""
    tokenizer, loader, val_batches = make_data(cfg, d)
    mcfg = build_model_config(cfg, tokenizer.vocab_size)
    torch.manual_seed(cfg.seed)
    with torch.device(d.device):
        model = FoxLM(mcfg)
    n_params = sum(p.numel() for p in model.parameters())
    bf16 = d.device.type == "cuda" and cfg.dtype == "bf16"
    if d.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    bf16_autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    capacity = device_capacity(d.device)
    compiled = compile_wanted(cfg.compile, d.device)
    measure = functools.partial(
        step_memory, model, cfg.micro_batch_size, cfg.seq_len, world_size=d.world_size, autocast=bf16_autocast
    )
    checkpointing, mem = checkpointing_wanted(
        cfg.activation_checkpointing,
        measure,
        capacity,
        measure_compiled=functools.partial(measure, compiled=True) if compiled else None,
    )
    checkpointing = broadcast_object(checkpointing, d)  # ranks that disagreed would differ in their collectives
    graphs = graphs_wanted(
        cfg.cuda_graphs,
        d.device,
        compiled=compiled,
        distributed=d.distributed,
        checkpointing=checkpointing,
        peak_bytes=mem.peak(checkpointing) if mem is not None else None,
        capacity=capacity,
    )
    parallelize(
        model,
        d,
        activation_checkpointing=checkpointing,
        compile=compiled,
        param_dtype=torch.bfloat16 if bf16 else None,
        cuda_graphs=graphs,
    )
    # Without FSDP, bf16 comes from autocast; with FSDP, from its MixedPrecisionPolicy.
    autocast = bf16_autocast if not d.distributed else contextlib.nullcontext()
    s = Session(
        cfg=cfg,
        d=d,
        mcfg=mcfg,
        model=model,
        optimizer=build_optimizer(model, cfg),
        loader=loader,
        val_batches=val_batches,
        autocast=autocast,
        accum=cfg.grad_accum_steps(d.world_size),
        logger=MetricsLogger(cfg.run_dir, enabled=d.is_main, tensorboard=cfg.tensorboard, fresh=resume is None),
        say=say if d.is_main else (lambda *_: None),
        n_params=n_params,
        peak=peak_flops(d.device, cfg.peak_tflops)[0],
        compiled=compiled,
        checkpointing=checkpointing,
        graphs=graphs,
        memory=mem,
    )
    if cfg.activation_checkpointing == "auto" and capacity is not None:
        s.say(describe(checkpointing, mem, capacity))
    if cfg.cuda_graphs == "auto" and compiled and d.device.type == "cuda" and not d.distributed:
        s.say(f"CUDA graphs {'on' if graphs else 'off'} for the compiled blocks (auto; cuda_graphs=false: off)")
    resumed_from = _resume(s, resume) if resume is not None else None
    if graphs:  # after the resume: loading an optimizer's state into a fresh one wants its gradients None
        prepare_graph_grads(model)
    _on_main(d, lambda: _settle_run_dir(s, resumed_from, tokenizer, replace))
    _log_start(s, resumed_from, changes)
    return s


def _settle_run_dir(s: Session, resumed_from: str | None, tokenizer: Tokenizer, replace: bool) -> None:
    """Rank 0, once the run is set up: delete the run it replaces (--overwrite), or move another branch's
    checkpoints aside, then write config.json and the run's copy of its tokenizer (generate and eval read it,
    not the training corpus)."""
    if replace:
        remove_run_files(s.cfg.run_dir)
    if resumed_from is not None:
        abandoned = branch_off(s.cfg.run_dir, resumed_from, s.step)
        if abandoned is not None:
            s.say(f"resumed from a checkpoint older than the run's newest: the newer ones moved to {abandoned}")
        # The log's records of later steps (lost since the checkpoint, or another branch's) leave the run's history.
        s.logger.rewind(s.step, (abandoned or s.cfg.run_dir) / SUPERSEDED_LOG)
    s.cfg.save(s.cfg.run_dir / "config.json")
    save_tokenizer(tokenizer, s.cfg.run_dir / RUN_TOKENIZER)


def _resume(s: Session, resume: str | Path) -> str:
    """Load the checkpoint into the session; return its directory."""
    state = load_checkpoint(resume, s.model, s.optimizer, model_config=s.mcfg, d=s.d)
    apply_settings(s.optimizer, s.cfg)  # the load restored the checkpoint's hyperparameters with its state
    s.step, s.tokens = state["step"], state["tokens"]
    try:
        s.loader.load_state_dict(state["loader"])
    except (KeyError, ValueError) as e:
        before = TrainConfig.from_dict(read_meta(Path(state["dir"]), verify=False)["train_config"]).to_dict()
        changed = [k for k, v in s.cfg.to_dict().items() if before[k] != v and k not in ("steps", "out")]
        because = f" (changed since it: {', '.join(changed)})" if changed else ""
        raise CheckpointError(f"checkpoint {state['dir']} is for another data stream{because}: {e}") from None
    if Path(state["dir"]).parent.resolve() == checkpoint_root(s.cfg.run_dir).resolve():
        s.checkpointed = s.step
    return str(state["dir"])


def _log_start(s: Session, resumed_from: str | None, changes: dict[str, list[Any]]) -> None:
    cfg, d = s.cfg, s.d
    warnings = []
    if cfg.warmup_tokens > cfg.total_tokens:
        warnings.append(
            f"warmup_tokens={cfg.warmup_tokens} is longer than the run ({cfg.total_tokens} tokens): the learning rate "
            f"rises for the whole run, to {lr_at(cfg.total_tokens, cfg):.3g} of lr={cfg.lr:.3g}, and never decays"
        )
    s.logger.log(
        {
            "kind": "start",
            "step": s.step,
            "n_params": s.n_params,
            "world_size": d.world_size,
            "device": str(d.device),
            "commit": git_commit(REPO) if d.is_main else None,  # the code that trains (provenance of results)
            "grad_accum": s.accum,
            "activation_checkpointing": s.checkpointing,
            "cuda_graphs": s.graphs,
            "memory_estimate": dataclasses.asdict(s.memory) if s.memory is not None else None,
            "peak": peak_flops(d.device, cfg.peak_tflops)[1],
            "resumed_from": resumed_from,
            "resume_changes": changes or None,
            "warnings": warnings or None,
            "train_config": cfg.to_dict(),
            "model_config": {k: getattr(s.mcfg, k) for k in s.mcfg.__dataclass_fields__},
        }
    )
    s.say(
        f"foxacp: {s.n_params / 1e6:.2f}M params, {d.world_size} x {d.device.type}, "
        f"{cfg.total_steps} steps of {cfg.global_batch_tokens} tokens ({s.accum} micro-batches of "
        f"{cfg.micro_batch_size} x {cfg.seq_len} per device), run dir {cfg.run_dir}"
        + (f", resumed at step {s.step}" if resumed_from is not None else "")
    )
    if changes:
        s.say("settings changed on resume: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items()))
    for w in warnings:
        s.say(f"warning: {w}")
    if resumed_from is not None and s.step >= cfg.total_steps:
        s.say(f"the run is complete (step {s.step} of {cfg.total_steps}): pass --steps N (N > {s.step}) to train on")


def _step(s: Session, meter: AcpMeter, first_step: int) -> StepResult:
    """One optimizer step: forward and backward over the micro-batches, the health check, the update."""
    cfg, d = s.cfg, s.d
    loader_state = s.loader.state_dict()  # the state to checkpoint if this step diverges
    micro = split_batch(next(s.loader), s.accum)
    n_targets = torch.tensor(float(sum(int((mb["labels"] != IGNORE_INDEX).sum()) for mb in micro)), device=d.device)
    all_reduce_sum(n_targets, d)
    lr = lr_at(s.tokens + cfg.global_batch_tokens, cfg)
    set_lr(s.optimizer, lr)
    # The first step (and with CUDA graphs the second, where they are recorded) is tried again without what
    # failed; each fallback turns one thing off for good (graphs, compile) or checkpointing on, so this ends, and a
    # try that cannot fall back raises its own error.
    early = s.step == first_step or (s.graphs and s.step == first_step + 1)
    while True:
        try:
            step_loss = _forward_backward(s, micro, n_targets, meter)
            break
        except Exception as e:
            if not (early and not d.distributed and _fall_back(s, e)):
                raise
        # outside the except block, so that the failed try's frames (and tensors) are gone
        s.optimizer.zero_grad(set_to_none=not s.graphs)  # its partial gradients and ACP counts
        meter.reset()
    # grad_clip 0 means no clipping: an infinite bound leaves the gradients as they are and gives the norm.
    grad_norm = torch.nn.utils.clip_grad_norm_(s.model.parameters(), cfg.grad_clip or math.inf)
    r = dataclasses.replace(_reduce_step(s, step_loss, n_targets, grad_norm, lr), spans=attention_spans(micro))
    if not (math.isfinite(r.loss) and math.isfinite(r.grad_norm)):
        _diverged(s, r, loader_state)
    s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=not s.graphs)
    s.step += 1
    s.tokens += cfg.global_batch_tokens
    if s.step == first_step + 1:
        set_value_checks(False)  # the gates were checked once; later checks would sync every layer
    return r


def _forward_backward(s: Session, micro: list[Batch], n_targets: Tensor, meter: AcpMeter) -> Tensor:
    """Accumulate the gradients of the micro-batches; return the summed loss (float64, on the device)."""
    step_loss = torch.zeros((), dtype=torch.float64, device=s.d.device)
    for mb in micro:
        mb = to_device(mb, s.d.device)
        if s.graphs:  # the last micro-batch's graph outputs are consumed: the next replay may overwrite them
            torch.compiler.cudagraph_mark_step_begin()
        with s.autocast:
            loss_sum = token_losses(s.model, mb).sum()
        meter.add(s.model.acp_stats())
        (loss_sum * (s.d.world_size / n_targets)).backward()
        step_loss += loss_sum.detach()
    return step_loss


def _fall_back(s: Session, error: Exception) -> bool:
    """After an early step failed: compile the blocks without CUDA graphs if they were graphs (whatever failed:
    out of memory, their pool may be what did not fit), else turn on activation checkpointing if it ran out of
    memory without it because "auto" judged it unneeded, else make the blocks eager again if compilation failed;
    say so, log it and return True (the caller runs the step again), or False when none applies. Only a single
    process falls back: ranks that disagreed would wait on each other's collectives."""
    what = f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]
    if s.graphs:
        s.say(f"CUDA graphs failed at step {s.step + 1} ({what}); training continues without them")
        s.logger.log({"kind": "graphs_fallback", "step": s.step, "error": what})
        _ungraph(s)
        return True
    if isinstance(error, torch.OutOfMemoryError):
        if s.checkpointing or s.cfg.activation_checkpointing != "auto":
            return False
        s.say(f"step {s.step + 1} ran out of memory ({what[:120]}); training continues with activation checkpointing")
        s.logger.log({"kind": "checkpointing_fallback", "step": s.step, "error": what})
        checkpoint_blocks(s.model)
        s.checkpointing = True
        return True
    if not s.compiled:
        return False
    s.say(
        f"torch.compile failed at step {s.step + 1} ({what}); training continues without it (set compile=false to skip)"
    )
    s.logger.log({"kind": "compile_fallback", "step": s.step, "error": what})
    uncompile(s.model)
    torch.compiler.reset()
    s.compiled = s.graphs = False
    return True


def _ungraph(s: Session) -> None:
    """Compile the blocks again without CUDA graphs."""
    uncompile(s.model)
    torch.compiler.reset()
    for block in s.model.blocks:
        compile_block(block)
    s.graphs = False


def _reduce_step(s: Session, step_loss: Tensor, n_targets: Tensor, grad_norm: Tensor, lr: float) -> StepResult:
    """Sum the loss and the stop flags over ranks and bring them and the gradient norm to the host."""
    flag = torch.tensor(float(s.stop.signum is not None), dtype=torch.float64, device=s.d.device)
    both = all_reduce_sum(torch.stack([step_loss, flag]), s.d)
    gn = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
    loss, norm, stop = torch.stack([both[0] / n_targets, gn.double(), both[1]]).tolist()
    if stop > 0 and s.d.distributed:  # every rank names the signal, whichever ranks received it (the largest number)
        signum = torch.tensor(s.stop.signum or 0, device=s.d.device)
        s.stop.signum = int(all_reduce_max(signum, s.d))
    return StepResult(loss=loss, grad_norm=norm, lr=lr, stop=stop > 0)


def _diverged(s: Session, r: StepResult, loader_state: dict[str, Any]) -> None:
    """Checkpoint the state before the failed step (unless it is already saved) and raise DivergedError."""
    s.optimizer.zero_grad(set_to_none=not s.graphs)
    what, value = ("loss", r.loss) if not math.isfinite(r.loss) else ("gradient norm", r.grad_norm)
    text = "NaN" if math.isnan(value) else str(value)
    where = "no checkpoint: no step completed"
    if s.step > 0:
        if s.checkpointed != s.step:
            _checkpoint(s, loader_state)
        where = f"the last good state is checkpoint step_{s.step:06d}"
    raise DivergedError(f"{what} is {text} at step {s.step + 1}; {where}")


def _log_window(s: Session, window: Window, r: StepResult) -> dict[str, Any]:
    """Write the train record of the window that ends at this step; return it."""
    cfg, d = s.cfg, s.d
    elapsed = window.close()
    rec: dict[str, Any] = {
        "kind": "train",
        "step": s.step,
        "tokens": s.tokens,
        "loss": window.loss / window.steps,
        "lr": r.lr,
        "grad_norm": r.grad_norm,
        "tokens_per_s": window.steps * cfg.global_batch_tokens / elapsed,
    }
    if window.meter.visited is not None:
        visited, causal = (all_reduce_sum(t.to(d.device), d) for t in (window.meter.visited, window.meter.causal))
        rec.update(acp_summary(visited, causal))
    # Attention FLOPs follow the spans attention ran over: whole rows, or the packed documents within them.
    sq, n = all_reduce_sum(torch.tensor(window.spans, dtype=torch.float64, device=d.device), d).tolist()
    span = sq / n if n else cfg.seq_len
    if cfg.pack:
        rec["attn_span"] = span  # the mean of L^2 / L over the packed documents: seq_len for whole rows
    flops = flops_per_token(s.mcfg, span, rec.get("attn_fraction", 1.0))
    rec["mfu"] = rec["tokens_per_s"] * flops / (s.peak * d.world_size) if s.peak else None
    s.logger.log(rec)
    s.say(_format_line(s.step, cfg.total_steps, rec))
    window.reset()
    return rec


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


def _evaluate(s: Session) -> dict[str, Any]:
    """Evaluate on the held-out batches and log the record; return it."""
    ev = evaluate(s.model, s.val_batches, device=s.d.device, buckets=s.cfg.eval_buckets, autocast=s.autocast)
    rec = {"kind": "eval", "step": s.step, "tokens": s.tokens, **ev}
    s.logger.log(rec)
    s.say(f"eval step {s.step}: loss {ev['loss']:.4f} over {ev['eval_tokens']} tokens")
    return rec


def _checkpoint(s: Session, loader_state: dict[str, Any] | None = None) -> None:
    """Save the session's state as checkpoint ``step_{step}`` (``loader_state``: the loader's, by default)."""
    s.logger.sync()  # the log up to this step is on disk before the checkpoint is the run's latest
    path = save_checkpoint(
        s.cfg.run_dir,
        s.step,
        s.model,
        s.optimizer,
        tokens=s.tokens,
        loader_state=loader_state if loader_state is not None else s.loader.state_dict(),
        train_config=s.cfg,
        model_config=s.mcfg,
        d=s.d,
        keep=s.cfg.ckpt_keep,
    )
    s.checkpointed = s.step
    s.say(f"checkpoint {path}")
