"""Forget gates for the attention benchmark: a documented synthetic profile, or gates recorded from a model.

Synthetic profile (`synthetic_log_fgate`). Head h of H gets its own forgetting rate

    window_h = min_window * (max_window / min_window) ** (h / (H - 1))     (log-uniform over heads)
    rate_h   = window_decay / window_h
    log f[b, t, h] = -rate_h * exp(noise * z - noise**2 / 2),   z ~ N(0, 1) per (b, t, h)

so the decay between a query and a key `window_h` tokens back is about -window_decay nats (the log-normal
noise keeps the mean rate at rate_h). With window_decay = 34, `window_h` is the distance past which ACP
starts to prune: the threshold -2U - log(L) + log(eps) is -34.3 for U = 8 (QK-norm, head dim 64, gains 1),
L = 4096 and eps = e^-10. Windows run from 16 tokens to max_window = max_window_factor * context
(4x: beyond the context), so the heads range from a 16-token local window to no pruning at all.
max_window_factor is the calibration knob: with it, ACP (eps = e^-10) prunes this share of the causal
128x128 tiles, on unit-RMS q and k rows with qk_bound = sqrt(head_dim) (`foxacp.bench.attention`):

    context          4k     8k    16k    32k    64k
    12 or 24 x 64    52%    58%   62%    65%    68%
    12 x 128         50%    56%   60%    63%    66%

(more pruning at longer context, as in the ACP paper; tests/bench/test_gates.py checks the 4k-16k range.)

Recorded gates (`load_log_fgate_layers` / `load_log_fgate` + `fit_log_fgate`): a tensor of log forget gates
shaped (layers, B, T, H) or (B, T, H), e.g. from `FoxLM.forget_gates`, stored as .pt (a tensor, or a dict
holding one) or .safetensors; the attention benchmarks take one layer, the model benchmarks (throughput,
decode, evict) give model layer l the file's layer l mod layers (decode and evict: one chosen layer with
--gates-layer), and batch, time and heads are tiled (repeated) or cropped to the benchmark shape (decode and
evict keep the file's batch, cropped, and let sequence b read row b mod B).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

GATE_KEYS = ("log_fgate", "forget_gates", "log_forget_gates")


@dataclass(frozen=True)
class GateProfile:
    """Parameters of the synthetic gate profile (see the module docstring for the formula)."""

    min_window: float = 16.0
    max_window_factor: float = 4.0
    window_decay: float = 34.0
    noise: float = 0.5

    def windows(self, heads: int, seqlen: int) -> torch.Tensor:
        """Per-head effective windows in tokens, float64 (heads,), log-uniform from min_window."""
        max_window = self.max_window_factor * seqlen
        if heads == 1:
            return torch.tensor([max_window], dtype=torch.float64)
        frac = torch.arange(heads, dtype=torch.float64) / (heads - 1)
        return self.min_window * (max_window / self.min_window) ** frac

    def rates(self, heads: int, seqlen: int) -> torch.Tensor:
        """Per-head mean forgetting rates -E[log f] in nats per token, float64 (heads,)."""
        return self.window_decay / self.windows(heads, seqlen)

    def describe(self) -> dict:
        return {"kind": "synthetic", **asdict(self)}


def synthetic_log_fgate(
    batch: int,
    seqlen: int,
    heads: int,
    profile: GateProfile | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Log forget gates of the synthetic profile.

    Returns float32 (batch, seqlen, heads), every entry < 0. Deterministic for a given seed (drawn on
    the CPU, then moved to `device`). Raises ValueError on non-positive sizes.
    """
    if min(batch, seqlen, heads) <= 0:
        raise ValueError(f"sizes must be positive, got batch={batch} seqlen={seqlen} heads={heads}")
    profile = profile or GateProfile()
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, seqlen, heads, generator=gen, dtype=torch.float64)
    jitter = torch.exp(profile.noise * z - profile.noise**2 / 2)
    log_f = -profile.rates(heads, seqlen) * jitter
    return log_f.to(device=device, dtype=torch.float32)


def load_log_fgate_layers(path: str | Path) -> torch.Tensor:
    """Load recorded log forget gates of every layer: float32 (layers, B, T, H) (a 3-d file is one layer).

    The file holds a tensor shaped (layers, B, T, H) or (B, T, H): a .pt file with a tensor or a dict with one
    tensor (or a key among GATE_KEYS), or a .safetensors file likewise. Raises ValueError on a bad rank or key,
    or on values that are not finite and <= 0.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path))
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        keys = [k for k in GATE_KEYS if k in obj] or list(obj)
        if len(keys) != 1:
            raise ValueError(f"{path}: expected one tensor or a key among {GATE_KEYS}, got {list(obj)}")
        obj = obj[keys[0]]
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{path}: expected a tensor, got {type(obj).__name__}")
    gates = obj.detach().to(torch.float32)
    if gates.dim() == 3:
        gates = gates[None]
    elif gates.dim() != 4:
        raise ValueError(f"{path}: expected (layers, B, T, H) or (B, T, H), got {tuple(gates.shape)}")
    if not bool(torch.isfinite(gates).all()) or bool((gates > 0).any()):
        raise ValueError(f"{path}: log forget gates must be finite and <= 0")
    return gates


def load_log_fgate(path: str | Path, layer: int | None = None) -> torch.Tensor:
    """Load recorded log forget gates (see :func:`load_log_fgate_layers`) and pick one layer.

    `layer` selects the layer of a 4-d tensor (default 0; negative counts from the end). Returns float32
    (B, T, H). Raises ValueError on a bad rank, layer, key, or on values that are not finite and <= 0.
    """
    gates = load_log_fgate_layers(path)
    layer = 0 if layer is None else layer
    if not -gates.shape[0] <= layer < gates.shape[0]:
        raise ValueError(f"{path}: layer {layer} out of range for {gates.shape[0]} layers")
    return gates[layer]


def fit_log_fgate(gates: torch.Tensor, batch: int, seqlen: int, heads: int) -> torch.Tensor:
    """Tile (repeat) or crop gates (B0, T0, H0) along every axis to (batch, seqlen, heads).

    Repeating along time keeps each sequence a valid gate sequence (the cumulative sum simply continues).
    Returns a contiguous float32 tensor on the input's device.
    """
    out = gates
    for dim, size in enumerate((batch, seqlen, heads)):
        reps = math.ceil(size / out.shape[dim])
        if reps > 1:
            out = out.repeat(*[reps if d == dim else 1 for d in range(3)])
        out = out.narrow(dim, 0, size)
    return out.contiguous().to(torch.float32)
