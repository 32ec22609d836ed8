"""The run directory: one run at a time, never replaced by accident.

- :class:`RunLock`: an exclusive ``flock`` on ``RUN_DIR/lock`` held for the life of the run. The file
  records the holder's pid, host and start time for the error a second process gets. The kernel drops
  the lock when its process dies, so the lock of a killed run is taken over (with a message naming it).
- :func:`prepare_run_dir`: refuse a directory that holds another run unless told to continue it
  (resume) or to replace it (overwrite), check that the run and checkpoint folders are writable, and
  delete the temporaries of killed processes.

Under torchrun only rank 0 calls these (ranks on other hosts share the directory through rank 0); the
loop broadcasts rank 0's verdict so that every rank stops together.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from foxacp.data.tokenizer import RUN_TOKENIZER
from foxacp.io import host_name, remove_stale_temps, temp_path

from .checkpoint import CHECKPOINTS, checkpoint_root, in_run, step_dirs
from .config import ConfigError, TrainConfig
from .metrics import SUPERSEDED_LOG

LOCK = "lock"
# What a run leaves in its directory; overwriting deletes exactly these.
RUN_FILES = ("config.json", "log.jsonl", SUPERSEDED_LOG, CHECKPOINTS, "tb", "plot.png", RUN_TOKENIZER)


class RunDirError(RuntimeError):
    """A run directory that holds another run, is in use by another process, or cannot be written."""


class RunLock:
    """The exclusive lock on a run directory (see the module docstring). Use :meth:`acquire`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        """Lock ``run_dir`` (which must exist) for this process.

        Raises RunDirError naming the holder when another live process holds it. Prints a message to
        stderr when it takes over the lock left by a process that is gone.
        """
        path = Path(run_dir) / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise RunDirError(
                    f"{run_dir} is in use by another run ({_describe(holder)}); wait for it to end "
                    "or choose another --out"
                ) from None
            raise RunDirError(f"cannot lock {path} ({e}); its file system may not support locks") from None
        stale = _read_holder(fd)
        if stale:
            print(
                f"foxacp: taking over the lock of {run_dir} left by {_describe(stale)}, which has exited",
                file=sys.stderr,
            )
        info = {"pid": os.getpid(), "host": host_name(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        return cls(path, fd)

    def release(self) -> None:
        """Empty the lock file (a clean exit leaves nothing to take over) and unlock it. The file stays:
        deleting it would let a process waiting on the old file and one creating a new file both lock."""
        if self._fd < 0:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = -1


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode())
    except (ValueError, OSError):
        return None
    return info if isinstance(info, dict) else None


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "a process that left no details"
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that got as far as training (a log or a checkpoint), or a config.json that
    is not a run's (another program's: an exported model, say). A run's config.json alone is left by a start
    that failed before its first step, and is simply replaced."""
    root = checkpoint_root(run_dir)
    if (Path(run_dir) / "log.jsonl").exists() or (root / "latest").exists() or any(root.glob("step_*")):
        return True
    config = Path(run_dir) / "config.json"
    if not config.is_file():
        return False
    try:
        TrainConfig.load(config)
    except (ConfigError, OSError):
        return True
    return False


def prepare_run_dir(run_dir: Path, *, resume: Path | None, overwrite: bool) -> bool:
    """Make ``run_dir`` ready for a run that holds its lock (see the module docstring).

    A directory holding another run is refused unless ``resume`` points into it (the run continues) or
    ``overwrite`` is set. Returns whether the run there is to be replaced: the caller calls
    ``remove_run_files`` once the new run has started, so that a start that fails leaves the old run whole.
    Raises RunDirError with what to do instead, or OSError when the run or checkpoint folder cannot be written.
    """
    held = holds_run(run_dir)
    if held and overwrite and resume is not None and in_run(resume, run_dir):
        raise RunDirError(
            f"--resume {resume} continues the run in {run_dir} and --overwrite would replace it: pass one of them"
        )
    replace = held and (resume is None or not in_run(resume, run_dir))
    if replace and not overwrite:
        other = "" if resume is None else f" and --resume {resume} is not in it"
        root = checkpoint_root(run_dir)
        if not ((root / "latest").exists() or step_dirs(root)):  # nothing a resume could continue from
            raise RunDirError(
                f"{run_dir} holds a run that stopped before its first checkpoint{other}: pass --overwrite to start "
                "it over, or choose another --out"
            )
        raise RunDirError(
            f"{run_dir} already holds a run{other}: pass --resume to continue it, --overwrite to replace "
            "it, or choose another --out"
        )
    root = checkpoint_root(run_dir)
    root.mkdir(exist_ok=True)
    for folder in (Path(run_dir), root):
        probe = temp_path(folder / "write-test")
        probe.write_bytes(b"")  # raises PermissionError (or another OSError) now, not after training
        probe.unlink()
    remove_stale_temps(root)
    return replace


def remove_run_files(run_dir: Path) -> None:
    """Delete what a run left in ``run_dir`` (RUN_FILES). A symlinked folder (checkpoints/ on another disk) is
    emptied and kept: the link says where the run's checkpoints are to go."""
    for name in RUN_FILES:
        target = Path(run_dir) / name
        if target.is_symlink() and target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
