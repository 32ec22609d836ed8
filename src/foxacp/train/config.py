"""TrainConfig, the training presets, and ``key=value`` overrides.

Every training switch is a field of :class:`TrainConfig`; every preset lives in :data:`PRESETS`. A preset
names a model preset from ``foxacp.model.MODEL_PRESETS`` plus the context length, batch, learning rate and
token budget of the FoX papers' recipe. Overrides (``--set lr=1e-3 --set model.n_layers=2``) are typed by the
dataclass field types; ``model.*`` keys go to the ModelConfig.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from foxacp.io import atomic_write


class ConfigError(ValueError):
    """An unknown preset or field, or a value that does not parse as the field's type."""


@dataclass
class TrainConfig:
    """Everything a training run needs besides the model architecture (which ``model`` names).

    Batch sizes: ``seq_len`` tokens per sequence, ``micro_batch_size`` sequences per device per forward,
    ``global_batch_tokens`` tokens per optimizer step over all devices (gradient accumulation makes up the
    difference, so the global batch does not depend on the number of devices). The run length is ``steps``
    when set, else ``max_tokens // global_batch_tokens``; the learning-rate schedule spans the run.
    """

    preset: str = "tiny"
    model: str = "tiny"  # key into foxacp.model.MODEL_PRESETS
    # ModelConfig fields to replace, e.g. {"acp": False}: ACP, the attention backend and the architecture
    # are model settings (one source of truth), set from the command line as model.<field>=value.
    model_overrides: dict[str, Any] = field(default_factory=dict)
    # data
    corpus: str = "stdlib"
    tokenizer: str = "byte"
    cache_dir: str = "~/.cache/foxacp"  # tokenizer and token caches
    seq_len: int = 256
    pack: bool = False  # pack documents into rows with cu_seqlens (attention restarts per document)
    # share of training rows replaced by synthetic passkey sequences (foxacp.train.passkey_mix; needs pack=false)
    passkey_fraction: float = 0.0
    # batch and length
    global_batch_tokens: int = 4096
    micro_batch_size: int = 16
    steps: int | None = None
    max_tokens: int = 1_000_000
    # optimizer and schedule (the FoX papers' recipe)
    lr: float = 2e-3
    warmup_tokens: int = 100_000
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    seed: int = 0
    # what runs
    # torch.compile each block; "auto": on CUDA (1.5x at 125M/16k, experiments/046-train-step-profile), off on
    # CPU. A compilation that fails at the first step (or the second, with CUDA graphs) falls back to eager with a
    # message (single process).
    compile: bool | Literal["auto"] = "auto"
    # recompute each block in the backward; "auto": only where a step would not fit in the GPU's memory without it
    # (measured at the start, foxacp.train.memory), never on CPU
    activation_checkpointing: bool | Literal["auto"] = "auto"
    # replay each compiled block's forward and backward as CUDA graphs (torch.compile "reduce-overhead"): the host
    # stops pacing short steps (360M at 4k, one process on an H100: ACP 164 -> 112 ms, exact 152 -> 141, the same
    # gradients bit for bit, experiments/068-train-host-cost). "auto": where the blocks are compiled on one CUDA
    # device without activation checkpointing and, when the step's memory was estimated (activation_checkpointing
    # auto), it fits with room for the graphs' memory (foxacp.train.distributed.graphs_wanted); a failure in the
    # first two steps falls back to plain compiled blocks (a "graphs_fallback" log record)
    cuda_graphs: bool | Literal["auto"] = "auto"
    dtype: str = "bf16"  # GPU compute dtype: "bf16" (mixed precision) or "fp32"; CPU is always fp32
    device: str = "auto"  # "auto" (cuda when available), "cpu" or "cuda"
    # logging, evaluation, checkpoints
    out: str | None = None  # run directory; None: runs/<preset>
    log_every: int = 10  # a train record every log_every steps and at every checkpoint
    eval_every: int = 100
    eval_batches: int = 4  # the validation set: eval_batches x 8 held-out windows (train.loop.EVAL_WINDOWS)
    eval_buckets: int = 64  # loss by token position: this many buckets over the context
    ckpt_every: int = 500  # also at the end of the run; 0: only at the end
    ckpt_keep: int = 2  # completed checkpoints kept (older ones are deleted); 0 keeps all
    peak_tflops: float | None = None  # per-device peak for MFU; None: looked up by GPU name
    tensorboard: bool = True  # also log to TensorBoard when it is importable
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        """Validate every field (see :data:`RULES`): a config object is always a valid one."""
        for name, (ok, what) in RULES.items():
            value = getattr(self, name)
            if not ok(value):
                raise ConfigError(f"{name} must be {what}, got {value!r}")

    @property
    def run_dir(self) -> Path:
        return Path(self.out if self.out is not None else f"runs/{self.preset}")

    @property
    def total_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, self.max_tokens // self.global_batch_tokens)

    @property
    def total_tokens(self) -> int:
        return self.total_steps * self.global_batch_tokens

    def grad_accum_steps(self, world_size: int) -> int:
        """Micro-batches per device per optimizer step. Raises ConfigError when they do not divide."""
        per_micro = self.seq_len * self.micro_batch_size * world_size
        if self.global_batch_tokens % per_micro:
            raise ConfigError(
                f"global_batch_tokens={self.global_batch_tokens} is not a multiple of seq_len * "
                f"micro_batch_size * world_size = {self.seq_len} * {self.micro_batch_size} * {world_size}"
            )
        return self.global_batch_tokens // per_micro

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown TrainConfig fields {unknown}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    def save(self, path: Path) -> None:
        """Write the config as JSON to ``path`` atomically (a reader never sees half of it)."""
        atomic_write(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """Read a config saved by :meth:`save`. Raises ConfigError naming ``path`` when it is not one."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return cls.from_dict(data)
        except (ValueError, TypeError) as e:  # JSONDecodeError, UnicodeDecodeError and ConfigError included
            raise ConfigError(f"{path} is not a valid training config: {e}") from None


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _betas(v: Any) -> bool:
    return isinstance(v, tuple) and len(v) == 2 and all(_num(b) and 0 <= b < 1 for b in v)


# Every TrainConfig field: (check, what a valid value is). __post_init__ names the first field that fails.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "preset": (_text, "a non-empty string"),
    "model": (_text, "the name of a model preset"),
    "model_overrides": (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "a dict by field name"),
    "corpus": (_text, "a corpus spec"),
    "tokenizer": (_text, "a tokenizer spec"),
    "cache_dir": (_text, "a folder path"),
    "seq_len": (lambda v: _int(v) and v >= 1, "a positive integer"),
    "pack": (lambda v: isinstance(v, bool), "true or false"),
    "passkey_fraction": (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "global_batch_tokens": (lambda v: _int(v) and v >= 1, "a positive integer"),
    "micro_batch_size": (lambda v: _int(v) and v >= 1, "a positive integer"),
    "steps": (lambda v: v is None or (_int(v) and v >= 1), "a positive integer or none"),
    "max_tokens": (lambda v: _int(v) and v >= 1, "a positive integer"),
    "lr": (lambda v: _num(v) and v > 0, "a finite number > 0"),
    "warmup_tokens": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "min_lr_ratio": (lambda v: _num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "weight_decay": (lambda v: _num(v) and v >= 0, "a finite number >= 0"),
    "betas": (_betas, "two numbers in [0, 1)"),
    "adam_eps": (lambda v: _num(v) and v > 0, "a finite number > 0"),
    "grad_clip": (lambda v: _num(v) and v >= 0, "a finite number >= 0 (0: no clipping)"),
    "seed": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "compile": (lambda v: isinstance(v, bool) or v == "auto", "true, false or auto"),
    "activation_checkpointing": (lambda v: isinstance(v, bool) or v == "auto", "true, false or auto"),
    "cuda_graphs": (lambda v: isinstance(v, bool) or v == "auto", "true, false or auto"),
    "dtype": (lambda v: v in ("bf16", "fp32"), "bf16 or fp32"),
    "device": (lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
    "out": (lambda v: v is None or _text(v), "a folder path or none"),
    "log_every": (lambda v: _int(v) and v >= 1, "a positive integer"),
    "eval_every": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: no evaluation)"),
    "eval_batches": (lambda v: _int(v) and v >= 1, "a positive integer"),
    "eval_buckets": (lambda v: _int(v) and v >= 1, "a positive integer"),
    "ckpt_every": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: only at the end)"),
    "ckpt_keep": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: keep all)"),
    "peak_tflops": (lambda v: v is None or (_num(v) and v > 0), "a finite number > 0 or none"),
    "tensorboard": (lambda v: isinstance(v, bool), "true or false"),
    "progress": (lambda v: isinstance(v, bool), "true or false"),
}

_M = 1_000_000
_B = 1_000_000_000
_HALF_M = 1 << 19  # 0.5M tokens per step (the FoX papers' recipe)

# What the 125M, 360M and 760M presets share (the FoX papers' recipe); each adds its size, batch, budget and LR.
_PAPER_RECIPE: dict[str, Any] = dict(
    seq_len=4096,
    global_batch_tokens=_HALF_M,
    warmup_tokens=256 * _M,
    log_every=10,
    eval_every=500,
    eval_batches=16,
    ckpt_every=1000,
)

# The training presets. Large presets follow the paper recipe: 0.5M-token steps, 256M warmup tokens,
# cosine to 0; contexts are 4k by default (override seq_len and micro_batch_size for 8k/16k).
PRESETS: dict[str, dict[str, Any]] = {
    # CPU demo and tests: a few minutes on two cores.
    "tiny": dict(
        model="tiny",
        seq_len=512,
        global_batch_tokens=4096,
        micro_batch_size=8,
        max_tokens=250 * 4096,
        lr=2e-3,
        warmup_tokens=20 * 4096,
        min_lr_ratio=0.1,
        log_every=10,
        eval_every=125,
        eval_batches=16,
        eval_buckets=32,
        ckpt_every=0,
    ),
    "125M": dict(_PAPER_RECIPE, model="125M", micro_batch_size=8, max_tokens=2_700 * _M, lr=2e-3),
    "360M": dict(_PAPER_RECIPE, model="360M", micro_batch_size=4, max_tokens=7_500 * _M, lr=2e-3),
    "760M": dict(_PAPER_RECIPE, model="760M", micro_batch_size=4, max_tokens=16 * _B, lr=1e-3),
}


def preset_config(name: str) -> TrainConfig:
    """The TrainConfig of preset ``name``. Raises ConfigError for an unknown name."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return TrainConfig(preset=name, **PRESETS[name])


# ---- overrides ------------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(text: str, tp: Any, key: str) -> Any:
    """Parse ``text`` as type ``tp`` (a resolved annotation). Raises ConfigError when it does not parse."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("none", "null"):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse(text, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors))
    if origin is typing.Literal:
        for arg in args:
            if str(arg) == text:
                return arg
        raise ConfigError(f"{key}: {text!r} is not one of {list(args)}")
    if origin is tuple:
        parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(p.strip(), args[0], key) for p in parts)
        if len(parts) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} comma-separated values, got {text!r}")
        return tuple(_parse(p.strip(), a, key) for p, a in zip(parts, args, strict=True))
    if tp is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{key}: {text!r} is not a boolean (true/false)")
    if tp is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            pass
        try:
            value = float(text)  # accept 2.7e9 for token counts
        except ValueError:
            raise ConfigError(f"{key}: {text!r} is not an integer") from None
        if not value.is_integer():
            raise ConfigError(f"{key}: {text!r} is not an integer")
        return int(value)
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}: {text!r} is not a number") from None
    if tp is str:
        return text
    raise ConfigError(f"{key}: fields of type {tp} cannot be set from the command line")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def parse_overrides(cfg: TrainConfig, items: list[str], model_config_cls: type | None = None) -> TrainConfig:
    """Return a copy of ``cfg`` with ``key=value`` items applied.

    ``key`` is a TrainConfig field, or ``model.<field>`` for a field of ``model_config_cls`` (default:
    ``foxacp.model.ModelConfig``), which is stored in ``model_overrides``. Values are parsed by the field's
    type: ints accept ``1_000`` and ``2.7e9``, bools ``true/false/1/0/yes/no/on/off``, optionals
    ``none``, tuples comma-separated values. Raises ConfigError on a malformed item, an unknown field
    (naming the known ones) or a value that does not parse.
    """
    train_types = _field_types(TrainConfig)
    changes: dict[str, Any] = {}
    model_changes: dict[str, Any] = dict(cfg.model_overrides)
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        if key.startswith("model."):
            if model_config_cls is None:
                from foxacp.model import ModelConfig as model_config_cls
            name = key[len("model.") :]
            model_types = _field_types(model_config_cls)
            if name not in model_types:
                raise ConfigError(
                    f"unknown model field {name!r} in {item!r}; ModelConfig fields: {sorted(model_types)}"
                )
            model_changes[name] = _parse(text, model_types[name], key)
        elif key in ("model_overrides", "preset"):
            raise ConfigError(f"{key!r} cannot be overridden; use --preset or model.<field>=value")
        elif key in train_types:
            changes[key] = _parse(text, train_types[key], key)
        else:
            hint = ""
            if model_config_cls is None:
                from foxacp.model import ModelConfig as model_config_cls
            if key in _field_types(model_config_cls):
                hint = f" (did you mean model.{key}?)"
            raise ConfigError(
                f"unknown field {key!r} in {item!r}{hint}; TrainConfig fields: {sorted(train_types)}; "
                "model fields are set as model.<field>=value"
            )
    return dataclasses.replace(cfg, model_overrides=model_changes, **changes)


def build_model_config(cfg: TrainConfig, vocab_size: int | None = None):
    """The ModelConfig of a run: ``MODEL_PRESETS[cfg.model]`` with ``cfg.model_overrides`` applied.

    ``vocab_size`` (the tokenizer's) replaces the preset's, rounded up to a multiple of 64 for efficient
    matmuls, unless ``model.vocab_size`` is overridden. ``record_acp_stats`` is on (the loop logs the
    savings) unless overridden. Raises ConfigError for an unknown model preset, a bad override, or an
    overridden vocabulary smaller than the tokenizer's.
    """
    from foxacp.model import MODEL_PRESETS

    if cfg.model not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset {cfg.model!r}; choose from {sorted(MODEL_PRESETS)}")
    changes: dict[str, Any] = {"record_acp_stats": True}
    if vocab_size is not None:
        changes["vocab_size"] = -(-vocab_size // 64) * 64
        overridden = cfg.model_overrides.get("vocab_size")
        if overridden is not None and overridden < vocab_size:
            raise ConfigError(f"model.vocab_size={overridden} is smaller than the tokenizer's {vocab_size}")
    changes.update(cfg.model_overrides)
    try:
        return dataclasses.replace(MODEL_PRESETS[cfg.model], **changes)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad model config: {e}") from None
