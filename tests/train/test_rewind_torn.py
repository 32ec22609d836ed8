"""MetricsLogger.rewind moves superseded records to log-superseded.jsonl whole: an append cut short (disk full,
SIGKILL) would leave part of the block, which the next rewind would append again (records twice, one line torn)."""

from __future__ import annotations

import builtins
import errno
import json
import os

import pytest

from foxacp.train.metrics import SUPERSEDED_LOG, MetricsLogger


def test_a_rewind_cut_mid_append_leaves_each_superseded_record_once(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    recs = [{"kind": "train", "step": s, "loss": 1.0 / s} for s in range(1, 7)]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    to = run / SUPERSEDED_LOG
    real_open = builtins.open

    class FullDisk:
        """A file whose write stores the first 60 bytes (a record and a half), then fails: the disk is full. Every
        file written for the superseded log (itself or a temporary of it) fills the disk."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[:60])
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def opening(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        writing = any(c in mode for c in "aw")
        return FullDisk(f) if writing and SUPERSEDED_LOG in os.path.basename(str(path)) else f

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", opening)
        with pytest.raises(OSError, match="No space"):
            MetricsLogger(run, enabled=True, tensorboard=False, fresh=False).rewind(3, to)
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]

    # Space is freed; the run is resumed from the same checkpoint (step 3) and rewinds again.
    MetricsLogger(run, enabled=True, tensorboard=False, fresh=False).rewind(3, to)
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    lines = to.read_text().splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line)["step"])
        except ValueError:
            parsed.append(f"malformed: {line[:70]}")
    assert parsed == [4, 5, 6], parsed
