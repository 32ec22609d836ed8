"""MetricsLogger.rewind: a crash between its two writes moves no record twice, and TensorBoard purges exactly the
steps after the checkpoint."""

from __future__ import annotations

import json
import sys
import types

import pytest

import foxacp.train.metrics as metrics
from foxacp.train.metrics import SUPERSEDED_LOG, MetricsLogger


def _log(run, steps):
    run.mkdir(exist_ok=True)
    (run / "log.jsonl").write_text("".join(json.dumps({"kind": "train", "step": s}) + "\n" for s in steps))


def _steps(path):
    return [json.loads(x)["step"] for x in path.read_text().splitlines()] if path.exists() else []


def test_a_crash_after_the_superseded_log_is_written_moves_no_record_twice(tmp_path, monkeypatch):
    """rewind writes log-superseded.jsonl, then rewrites log.jsonl. A crash between the two (the second write fails)
    leaves the records in both; the next rewind finds them already at the end of the superseded log and must not
    append them again."""
    run = tmp_path / "run"
    _log(run, range(1, 7))
    to = run / SUPERSEDED_LOG
    real = metrics.atomic_write

    def failing(path, data):
        if path != to:
            raise OSError("killed before log.jsonl was rewritten")
        return real(path, data)

    with monkeypatch.context() as m:
        m.setattr(metrics, "atomic_write", failing)
        with pytest.raises(OSError):
            MetricsLogger(run, enabled=True, tensorboard=False, fresh=False).rewind(3, to)
    assert _steps(to) == [4, 5, 6] and _steps(run / "log.jsonl") == [1, 2, 3, 4, 5, 6]
    MetricsLogger(run, enabled=True, tensorboard=False, fresh=False).rewind(3, to)
    assert _steps(run / "log.jsonl") == [1, 2, 3]
    assert _steps(to) == [4, 5, 6]


def test_tensorboard_purges_the_steps_after_the_checkpoint_only(tmp_path, monkeypatch):
    made = []

    class SummaryWriter:
        def __init__(self, logdir, purge_step=None):
            made.append(purge_step)

        def add_scalar(self, *a):
            pass

        def close(self):
            pass

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    run = tmp_path / "run"
    _log(run, range(1, 7))
    logger = MetricsLogger(run, enabled=True, tensorboard=True, fresh=False)
    logger.rewind(3, run / SUPERSEDED_LOG)
    logger.log({"kind": "start", "step": 3})
    logger.close()
    assert made == [4]  # events of steps >= 4 go; step 3 (the checkpoint's own record) stays


def test_lines_that_are_not_records_stay_in_the_log(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = ['{"kind": "train", "step": 1}', "[1, 2]", "not json", '{"kind": "train", "step": 5}', '"text"']
    (run / "log.jsonl").write_text("\n".join(lines) + "\n")
    to = run / SUPERSEDED_LOG
    assert MetricsLogger(run, enabled=True, tensorboard=False, fresh=False).rewind(3, to) == 1
    assert (run / "log.jsonl").read_text().splitlines() == [lines[0], lines[1], lines[2], lines[4]]
    assert to.read_text().splitlines() == [lines[3]]


def test_read_log_returns_only_json_objects(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"kind": "start", "step": 0}\n[1]\n3\n{"kind": "train", "step": 1}\n')
    assert [r["kind"] for r in metrics.read_log(tmp_path)] == ["start", "train"]
