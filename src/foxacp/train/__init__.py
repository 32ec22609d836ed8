"""Training: TrainConfig and presets, the loop, optimizer and schedule, FSDP2, checkpoints, the run directory
(lock, refusal to replace a run), clean stops, metrics, plots.

from foxacp.train import preset_config, parse_overrides, train
cfg = parse_overrides(preset_config("tiny"), ["steps=100", "model.acp=false"])
summary = train(cfg)
"""

from .checkpoint import CheckpointError
from .config import PRESETS, ConfigError, TrainConfig, build_model_config, parse_overrides, preset_config
from .loop import train
from .plot import plot_run
from .rundir import RunDirError
from .stop import DivergedError

__all__ = [
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "DivergedError",
    "RunDirError",
    "TrainConfig",
    "build_model_config",
    "parse_overrides",
    "plot_run",
    "preset_config",
    "train",
]
