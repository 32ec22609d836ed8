"""Metrics: peak FLOP/s and MFU, ACP savings, and the JSONL/TensorBoard logger."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from foxacp.io import atomic_write, fsync_dir, read_jsonl

# Dense bf16 tensor-core peak TFLOP/s per GPU (no sparsity), matched in order as substrings of
# torch.cuda.get_device_name(): more specific names first. GPUs not listed get DEFAULT_PEAK_TFLOPS (an
# H100 SXM) with a warning; set TrainConfig.peak_tflops to use another number. CPU runs report no MFU
# unless peak_tflops is set.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
)
DEFAULT_PEAK_TFLOPS = 989.0


def peak_flops(device: torch.device, override_tflops: float | None = None) -> tuple[float | None, str]:
    """Peak FLOP/s of one ``device`` and where the number came from (for the run's log).

    ``override_tflops`` wins; CUDA devices are looked up in PEAK_TFLOPS (default DEFAULT_PEAK_TFLOPS);
    CPU returns None (no MFU).
    """
    if override_tflops is not None:
        return override_tflops * 1e12, "config peak_tflops"
    if device.type != "cuda":
        return None, "cpu: no peak (set peak_tflops for MFU)"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS:
        if key in name:
            return tflops * 1e12, f"{name}: {tflops:g} TFLOP/s bf16"
    return DEFAULT_PEAK_TFLOPS * 1e12, f"{name} not in table: assuming {DEFAULT_PEAK_TFLOPS:g} TFLOP/s"


class AcpMeter:
    """Sums tiles visited and causal tiles per (layer, head) over the forwards of a logging window.

    ``add`` takes ``model.acp_stats()`` (a list of AcpStats or None per layer) and keeps the sums on the
    stats' device (no host sync) in ``visited`` and ``causal``, (L, H) int64 or None before the first ``add``;
    the caller sums them over ranks.
    """

    def __init__(self) -> None:
        self.visited: torch.Tensor | None = None
        self.causal: torch.Tensor | None = None

    def add(self, stats: list) -> None:
        if not stats or any(s is None for s in stats):
            return
        visited = torch.stack([s.tiles_visited for s in stats])
        causal = torch.stack([s.tiles_causal for s in stats])
        if self.visited is None:
            self.visited, self.causal = visited.clone(), causal.clone()
        else:
            self.visited += visited
            self.causal += causal

    def reset(self) -> None:
        self.visited = self.causal = None


def acp_summary(visited: torch.Tensor, causal: torch.Tensor) -> dict[str, Any]:
    """(L, H) tile counts -> {"acp_saving": overall, "acp_layer": [L], "acp_head": [[H] * L],
    "attn_fraction": visited / causal overall}."""
    visited, causal = visited.double().cpu(), causal.double().cpu()
    total = causal.sum().item()
    fraction = visited.sum().item() / total if total else 1.0
    layer = 1.0 - visited.sum(1) / causal.sum(1).clamp_min(1)
    head = 1.0 - visited / causal.clamp_min(1)
    return {
        "acp_saving": 1.0 - fraction,
        "attn_fraction": fraction,
        "acp_layer": [round(x, 5) for x in layer.tolist()],
        "acp_head": [[round(x, 5) for x in row] for row in head.tolist()],
    }


# Where a resumed run puts the log records of the steps after its checkpoint (``MetricsLogger.rewind``): the run
# directory, or the abandoned branch's folder when the resume branched off.
SUPERSEDED_LOG = "log-superseded.jsonl"


class MetricsLogger:
    """Appends one JSON object per line to ``run_dir/log.jsonl`` (and scalars to TensorBoard when
    available). Only the main rank writes; elsewhere every call is a no-op. ``fresh``: a new run, whose
    directory holds no log; otherwise records are appended (a resumed run) after any torn last line is cut."""

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool, fresh: bool) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "log.jsonl"
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not fresh:  # a fresh run's directory holds no log (an overwritten run's goes once the new one starts)
            _drop_torn_tail(self.path)
        self._tb_dir = Path(run_dir) / "tb" if tensorboard else None
        self._purge_step: int | None = None

    def rewind(self, step: int, to: Path) -> int:
        """A run resumed at ``step`` redoes the steps after it (or abandons them, on another branch): their records
        move from the log to the end of ``to`` (a JSON-lines file; nothing is deleted), and TensorBoard drops its
        events after ``step``, so that the run's history holds one branch. Returns the number of records moved."""
        if not self.enabled or not self.path.exists():
            return 0
        self._purge_step = step + 1
        keep, moved = [], []
        for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                later = int(json.loads(line).get("step", -1)) > step
            except (ValueError, TypeError, AttributeError):  # not a record of ours: kept where it is
                later = False
            (moved if later else keep).append(line)
        if moved:
            to.parent.mkdir(parents=True, exist_ok=True)
            block = "".join(moved)
            # First: a crash before the log is rewritten leaves them in both, not in neither; the next rewind then
            # finds them already at the end of ``to`` and does not move them twice. Written whole (atomically): an
            # append cut short would leave part of the block, which the next rewind would append again.
            before = to.read_text(encoding="utf-8") if to.exists() else ""
            if not before.endswith(block):
                atomic_write(to, before + block)
            atomic_write(self.path, "".join(keep))
        return len(moved)

    def _writer(self):
        """The TensorBoard writer, opened at the first record (after any ``rewind``); None without TensorBoard."""
        if self.tb is None and self._tb_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._tb_dir = None
                return None
            self.tb = SummaryWriter(str(self._tb_dir), purge_step=self._purge_step)
        return self.tb

    def sync(self) -> None:
        """Put the records logged so far on disk (fsync): called before a checkpoint becomes the run's latest, so
        that a power loss cannot keep the checkpoint and lose the records of the steps before it."""
        if self.enabled and self.path.exists():
            with open(self.path, "rb+") as f:
                os.fsync(f.fileno())
            fsync_dir(self.path.parent)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer() is not None:
            kind, step = record.get("kind", "train"), record.get("step", 0)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "time"):
                    self.tb.add_scalar(f"{kind}/{key}", value, step)
            for i, value in enumerate(record.get("acp_layer", [])):
                self.tb.add_scalar(f"{kind}/acp_layer/{i}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _drop_torn_tail(path: Path) -> None:
    """Cut a log back to its last complete line: a crash mid-record leaves a torn line, which the next
    record appended would otherwise join (and be lost with it)."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/log.jsonl`` (a torn last line from a crash is skipped). Raises
    FileNotFoundError when the run has no log."""
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no log at {path}")
    return [r for _, r in read_jsonl(path, skip_malformed=True) if isinstance(r, dict)]
