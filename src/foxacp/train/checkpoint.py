"""Atomic, verifiable training checkpoints.

Layout of a run directory::

    RUN_DIR/checkpoints/step_000500/model.safetensors   full (unsharded) weights
                                   /state.pt            optimizer, step, tokens, data-loader state, RNG states
                                   /meta.json           step, configs, and the size and sha256 of each file
    RUN_DIR/checkpoints/latest                          the name of the newest complete checkpoint

A checkpoint is written into a temporary directory, flushed to disk, and renamed into place; ``latest``
is then replaced atomically. A crash at any point leaves the previous checkpoint and pointer intact; the
temporary directories of a killed process (named by ``foxacp.io.temp_path``) are deleted at the next start.
Loading verifies every file against meta.json and the model config against the run's, and raises
:class:`CheckpointError` with the reason instead of loading half a state.

Under FSDP2 the full state dicts are gathered to CPU on rank 0 (``get_model_state_dict`` /
``get_optimizer_state_dict`` with ``full_state_dict=True, cpu_offload=True``) and rank 0 writes; on load
every rank reads the files and keeps its own shards. The same functions serve unsharded models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from foxacp.io import atomic_write, durable_file, fsync_dir, temp_path

from .distributed import Dist, barrier, broadcast_object, gather_objects

FORMAT = 1
_CHECKPOINT_NAME = re.compile(r"step_\d{6,}")
WEIGHTS, STATE, META, LATEST = "model.safetensors", "state.pt", "meta.json", "latest"

# ModelConfig fields that change how the model runs, not what its weights mean: they may differ on resume.
RUNTIME_FIELDS = frozenset({"acp", "log_eps", "qk_bound_safety", "record_acp_stats", "attn_backend"})


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupt, or does not match the model being trained."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def jsonable(obj: Any) -> Any:
    """A config (dataclass) as plain JSON types, so that configs compare the same after a round trip."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    return json.loads(json.dumps(obj, default=str))


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch and CUDA generator states as plain Python objects (so they
    pickle through collectives and load with ``weights_only=True``)."""
    name, key, *rest = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, key.tolist(), *rest),
        "torch": bytes(torch.get_rng_state().numpy()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = bytes(torch.cuda.get_rng_state().numpy())
    return state


def _bytes_tensor(b: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(b), dtype=torch.uint8)


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, key, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), *rest))
    torch.set_rng_state(_bytes_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(_bytes_tensor(state["cuda"]))


CHECKPOINTS = "checkpoints"  # a run's folder of checkpoints


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def home_run_dir(ckpt: Path) -> Path | None:
    """The run directory whose ``checkpoints/`` folder holds the checkpoint directory ``ckpt``; None for a
    checkpoint kept anywhere else (copied out of its run)."""
    ckpt = Path(ckpt)
    return ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS else None


def step_dirs(root: Path) -> list[Path]:
    """The checkpoint folders ``step_N`` directly in ``root``, oldest first (by N: names grow past 6 digits)."""
    found = [p for p in Path(root).glob("step_*") if p.is_dir() and _CHECKPOINT_NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step_")))


def in_run(path: str | Path, run_dir: Path) -> bool:
    """Whether ``path`` (a checkpoint, or the run directory) lies in ``run_dir``, its checkpoints/ followed
    through a symlink (checkpoints on another disk)."""
    p = Path(path).resolve()
    return any(p.is_relative_to(Path(f).resolve()) for f in (run_dir, checkpoint_root(run_dir)))


def branch_off(run_dir: Path, resumed: str | Path, step: int) -> Path | None:
    """Make a run resumed from one of its own checkpoints (``resumed``, at ``step``) continue from there alone:
    checkpoints of later steps (another branch of the run) move into ``checkpoints/abandoned-<time>/`` and
    ``latest`` names the resumed one, so that a plain resume after a crash continues this branch and pruning
    keeps its checkpoints. Nothing is deleted. Returns that folder, or None when nothing moved.

    Raises CheckpointError for a checkpoint inside ``run_dir`` but not in its ``checkpoints/`` (such as an
    abandoned one): continuing it in place would mix two branches; continue it into another run directory."""
    root = checkpoint_root(run_dir)
    resumed = Path(resumed).resolve()
    if not in_run(resumed, run_dir):
        return None  # another run's checkpoint: prepare_run_dir left this directory without a run of its own
    if resumed.parent != root.resolve():
        raise CheckpointError(
            f"checkpoint {resumed} lies in {run_dir} but outside its checkpoints/: resume from it into another --out"
        )
    later = [p for p in step_dirs(root) if int(p.name.removeprefix("step_")) > step]
    if not later:
        return None
    atomic_write(root / LATEST, resumed.name + "\n")  # first: a crash below leaves this branch's pointer
    dest = root / time.strftime("abandoned-%Y%m%d-%H%M%S")
    while dest.exists():
        dest = dest.with_name(dest.name + "x")
    dest.mkdir()
    for p in later:
        os.replace(p, dest / p.name)
    fsync_dir(root)
    return dest


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    tokens: int,
    loader_state: dict[str, Any],
    train_config: Any,
    model_config: Any,
    d: Dist,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step_{step:06d}`` of ``run_dir`` atomically and point ``latest`` at it.

    Collective under FSDP2: every rank must call it. Rank 0 writes; the others wait at a barrier. Keeps the
    newest ``keep`` checkpoints (0 or less keeps all). Returns the checkpoint directory.
    """
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=opts)
    optim = get_optimizer_state_dict(model, optimizer, options=opts)
    rngs = gather_objects(rng_state(), d)
    root = checkpoint_root(run_dir)
    name = f"step_{step:06d}"
    final = root / name
    if d.is_main:
        root.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(final)
        tmp.mkdir()
        try:
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
            save_file(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
            _fsync_file(tmp / WEIGHTS)
            state = {
                "optimizer": optim,
                "step": step,
                "tokens": tokens,
                "loader": loader_state,
                "rng": rngs,
                "world_size": d.world_size,
            }
            with durable_file(tmp / STATE) as f:
                torch.save(state, f)
            meta = {
                "format": FORMAT,
                "step": step,
                "tokens": tokens,
                "train_config": jsonable(train_config),
                "model_config": jsonable(model_config),
                "files": {n: {"bytes": (tmp / n).stat().st_size, "sha256": _sha256(tmp / n)} for n in (WEIGHTS, STATE)},
            }
            with durable_file(tmp / META) as f:
                f.write(json.dumps(meta, indent=2).encode())
            fsync_dir(tmp)
        except BaseException:  # a failed write (disk full, say) leaves no half checkpoint filling the disk
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():
            # A complete checkpoint of this step on this branch of the run (``branch_off`` moves other branches'
            # aside) holds this state: it is kept. Swapping it for the new one could not be made atomic.
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
        fsync_dir(root)
        atomic_write(root / LATEST, name + "\n")
        if keep > 0:
            for p in step_dirs(root)[:-keep]:
                if p != final:
                    shutil.rmtree(p)
    barrier(d)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its ``checkpoints/latest`` checkpoint), a ``checkpoints`` directory (its ``latest``),
    or a checkpoint directory (holding meta.json) -> the checkpoint directory.

    Raises CheckpointError when ``path`` is none of these, or its ``latest`` pointer is malformed or names
    a checkpoint that does not exist."""
    path = Path(path)
    if (path / META).exists() or (path / WEIGHTS).exists() or (path / STATE).exists():
        return path
    for root in (checkpoint_root(path), path):
        pointer = root / LATEST
        if pointer.exists():
            try:
                name = pointer.read_text(encoding="utf-8").strip()
            except UnicodeDecodeError:
                name = None
            if name is None or not _CHECKPOINT_NAME.fullmatch(name):
                raise CheckpointError(f"{pointer} is malformed: expected a checkpoint name such as step_000500")
            ckpt = root / name
            if not ckpt.is_dir():
                raise CheckpointError(f"{pointer} names {ckpt.name}, which does not exist")
            return ckpt
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: it does not exist")
    raise CheckpointError(
        f"no checkpoint at {path}: expected a checkpoint directory (with {META}) or a run directory (with "
        f"checkpoints/{LATEST}); it has no {META}, and no {LATEST} pointer in it or in its checkpoints/"
    )


def _check_meta(meta: Any) -> str | None:
    """What is wrong with the structure of a parsed meta.json, or None."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    if meta.get("format") != FORMAT:
        return f"format {meta.get('format')!r}, expected {FORMAT}"
    for key, kind in (("step", int), ("tokens", int), ("train_config", dict), ("model_config", dict)):
        if not isinstance(meta.get(key), kind):
            return f"{key!r} is missing or not a {kind.__name__}"
    files = meta.get("files")
    if not isinstance(files, dict) or set(files) != {WEIGHTS, STATE}:
        return f"'files' must list {WEIGHTS} and {STATE}"
    for name, rec in files.items():
        if not (isinstance(rec, dict) and isinstance(rec.get("bytes"), int) and isinstance(rec.get("sha256"), str)):
            return f"the record of {name} needs 'bytes' and 'sha256'"
    return None


def read_meta(ckpt: Path, verify: bool = True) -> dict[str, Any]:
    """meta.json of checkpoint directory ``ckpt``, after checking that every file it lists is present
    with the recorded size (and, when ``verify``, sha256). Raises CheckpointError otherwise."""
    ckpt = Path(ckpt)
    meta_path = ckpt / META
    if not meta_path.exists():
        raise CheckpointError(f"incomplete checkpoint {ckpt}: {META} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt checkpoint {ckpt}: {META} does not parse ({e})") from None
    problem = _check_meta(meta)
    if problem is not None:
        raise CheckpointError(f"corrupt checkpoint {ckpt}: {META} is malformed ({problem})")
    for name, rec in meta["files"].items():
        p = ckpt / name
        if not p.exists():
            raise CheckpointError(f"incomplete checkpoint {ckpt}: {name} is missing")
        size = p.stat().st_size
        if size != rec["bytes"]:
            raise CheckpointError(
                f"corrupt checkpoint {ckpt}: {name} has {size} bytes, expected {rec['bytes']} (truncated?)"
            )
        if verify and _sha256(p) != rec["sha256"]:
            raise CheckpointError(f"corrupt checkpoint {ckpt}: {name} does not match its sha256")
    return meta


def check_model_config(meta: dict[str, Any], model_config: Any, ckpt: Path) -> None:
    """Raise CheckpointError naming every architecture field where the checkpoint and ``model_config``
    differ (fields in RUNTIME_FIELDS may differ)."""
    saved, current = meta["model_config"], jsonable(model_config)
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r} vs run {current.get(k)!r}"
        for k in sorted(set(saved) | set(current))
        if k not in RUNTIME_FIELDS and saved.get(k) != current.get(k)
    ]
    if diffs:
        raise CheckpointError(f"checkpoint {ckpt} is for a different model: " + "; ".join(diffs))


def load_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """The full weights of a verified checkpoint directory, on CPU."""
    try:
        return load_file(Path(ckpt) / WEIGHTS)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"corrupt checkpoint {ckpt}: cannot read {WEIGHTS} ({e})") from None


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    model_config: Any,
    d: Dist,
) -> dict[str, Any]:
    """Restore ``model`` (and ``optimizer`` and this rank's RNG states) from ``path`` (see
    :func:`resolve_checkpoint`). Collective under FSDP2.

    Returns ``{"step", "tokens", "loader", "dir"}``. Raises CheckpointError for a missing, incomplete,
    corrupt or mismatched checkpoint; rank 0 verifies the files and the others follow its verdict.
    """
    error = None
    ckpt = None
    if d.is_main:
        try:
            ckpt = resolve_checkpoint(path)
            check_model_config(read_meta(ckpt), model_config, ckpt)
        except CheckpointError as e:
            error = str(e)
    error, ckpt = broadcast_object((error, ckpt), d)
    if error is not None:
        raise CheckpointError(error)
    weights = load_weights(ckpt)
    try:
        state = torch.load(ckpt / STATE, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises several types on a damaged file
        raise CheckpointError(f"corrupt checkpoint {ckpt}: cannot read {STATE} ({e})") from None
    opts = StateDictOptions(full_state_dict=True, strict=True)
    try:
        keys = set_model_state_dict(model, weights, options=opts)
        if keys.missing_keys or keys.unexpected_keys:
            raise KeyError(f"missing {keys.missing_keys}, unexpected {keys.unexpected_keys}")
        if optimizer is not None:
            set_optimizer_state_dict(model, optimizer, state["optimizer"], options=opts)
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"checkpoint {ckpt} does not fit the model: {e}") from None
    if state["world_size"] == d.world_size:
        set_rng_state(state["rng"][d.rank])
    elif d.is_main:
        set_rng_state(state["rng"][0])
    return {"step": state["step"], "tokens": state["tokens"], "loader": state["loader"], "dir": ckpt}
