"""File helpers shared by the token cache, the tokenizer cache, checkpoints and logs.

- :func:`atomic_file` / :func:`atomic_write`: write to a temporary name, fsync, and ``os.replace`` onto the
  target, so a reader sees the old file or the new one, never half of one.
- :func:`temp_path` names every temporary file or folder with this host and process id, so that
  :func:`remove_stale_temps` can tell the leftovers of a killed process from those of a live one.
- :func:`read_jsonl`: the records of a JSONL file, with the file and line of a malformed one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# <hidden target name>.tmp-<pid>-<host>-<8 hex>: the pid and host say whose temporary it is.
_TEMP = re.compile(r"\.tmp-(?P<pid>\d+)-(?P<host>[A-Za-z0-9-]+)-[0-9a-f]{8}$")


def host_name() -> str:
    """This machine's host name with every character outside [A-Za-z0-9-] replaced by '-'."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "unknown"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_path(path: Path) -> Path:
    """A fresh hidden temporary name next to ``path`` that records this process's pid and host."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{host_name()}-{uuid.uuid4().hex[:8]}")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporaries (files or folders named by :func:`temp_path`) in ``folder`` whose process
    on this host has exited; return what was deleted. Temporaries of live processes and of other hosts
    are kept. A missing folder holds none."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except FileNotFoundError:
        return removed
    host = host_name()
    for entry in entries:
        m = _TEMP.search(entry.name)
        if m is None or m["host"] != host or process_alive(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename or a new file in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def durable_file(path: Path) -> Iterator[IO[bytes]]:
    """Open a new binary file at ``path``; on a clean exit flush and fsync it."""
    with open(path, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """Write a binary file that appears at ``path`` complete or not at all.

    The data goes to :func:`temp_path` ``(path)``; on a clean exit it is fsynced and moved onto ``path``
    (replacing any old file); on an exception the temporary is deleted and the exception propagates.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        with durable_file(tmp) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` (str is UTF-8 encoded) to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def read_jsonl(path: Path, *, skip_malformed: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, value)`` for every non-blank line of the JSONL file ``path`` (numbered from 1).

    Raises:
        ValueError: a line that is not valid JSON or not UTF-8, naming the file and line; with
            ``skip_malformed`` such lines are skipped instead (the torn last line of a crashed run's log).
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                reason = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
                if skip_malformed:
                    continue
                raise ValueError(f"{path}:{n}: malformed JSONL line ({reason})") from None
            yield n, value


REPO = Path(__file__).resolve().parents[2]  # the checkout this package runs from (src layout)


def git_commit(repo: Path) -> str:
    """`git rev-parse HEAD` of repo, with "-dirty" when the work tree has changes or files git does not know
    (ignored files excepted); "unknown" without git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")
