"""Where result files go: one folder per result set, ``results/<date>-<commit>-<what>-<device>/``.

Every benchmark writes through ``result_dir`` so the folder name carries the facts the index
(``python -m foxacp.bench.index``) sorts by: the UTC date of the run, the short commit of the tree it
measured, what it measured (the benchmark, plus a tag for partial or differently configured runs) and the
device.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

RESULTS_ROOT = Path("results")
SET_NAME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})-(?P<commit>[0-9a-f]{7}(?:-dirty)?|unknown)-(?P<what>.+)-(?P<device>[a-z0-9]+)"
)


def device_tag(name: str, world_size: int = 1) -> str:
    """Short device name for a folder: "NVIDIA H100 80GB HBM3" -> "h100", with "x2" for two GPUs; names
    without a model number are reduced to letters and digits ("cpu")."""
    model = re.search(r"\b([a-z]+\d{2,4}[a-z]?)\b", name.lower())
    tag = model.group(1) if model else re.sub(r"[^a-z0-9]+", "", name.lower()) or "unknown"
    return tag + (f"x{world_size}" if world_size > 1 else "")


def short_commit(commit: str) -> str:
    """The first 7 hex digits of a commit as the benchmarks record it ("<sha>[-dirty]", "<sha> (given; ...)",
    "unknown"), keeping "-dirty"."""
    sha = commit.split()[0] if commit.strip() else "unknown"
    if not re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?", sha):
        return "unknown"
    return sha[:7] + ("-dirty" if sha.endswith("-dirty") else "")


def benchmark_name(base: str, tag: str = "", *, marks: Sequence[str] = ()) -> str:
    """A set's benchmark name: ``base`` for a full run on the default inputs, else ``base-TAG``, where TAG is the
    user's ``tag`` or the marks that say how the run departs from the default (quick, recorded gates, a sweep,
    part of the grid, ...), so that such a run never stands in the index for the full set."""
    tag = tag or "-".join(m for m in marks if m)
    return f"{base}-{tag}" if tag else base


def check_tag(tag: str) -> str:
    """``tag`` if it can name a result folder. Raises ValueError otherwise (argparse ``type=``)."""
    if tag and not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", tag):
        raise ValueError("a tag is lower-case letters and digits, words joined by dashes (it names the folder)")
    return tag


def result_dir(what: str, *, date: str, commit: str, device: str, root: Path = RESULTS_ROOT) -> Path:
    """The folder of one result set: ``root/<YYYY-MM-DD>-<commit7>-<what>-<device>``.

    date: ISO date or timestamp (UTC); commit: as recorded (see ``short_commit``); device: a ``device_tag``.
    Raises ValueError for a ``what`` that is empty or not lower-case letters, digits and dashes, or a device
    tag with a dash (the index splits the name at its last dash).
    """
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", what):
        raise ValueError(f"what must be lower-case words joined by dashes, got {what!r}")
    if not re.fullmatch(r"[a-z0-9]+", device):
        raise ValueError(f"device must be one word of lower-case letters and digits, got {device!r}")
    if not re.match(r"\d{4}-\d{2}-\d{2}", date):
        raise ValueError(f"date must start with YYYY-MM-DD, got {date!r}")
    return root / f"{date[:10]}-{short_commit(commit)}-{what}-{device}"
