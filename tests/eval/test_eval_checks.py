"""Bad ``foxacp eval`` inputs must be refused up front, not accepted silently or after the long work."""

from __future__ import annotations

import pytest

import foxacp.eval.report as report
from foxacp.eval.report import run_eval


class _Ran(Exception):
    pass


@pytest.mark.parametrize("overrides", [{"variant": "fox"}, {"acp": False}])
def test_compare_evict_on_a_model_that_cannot_evict_is_refused_before_the_evaluation(tiny_loader, tmp_path,
                                                                                   monkeypatch, overrides):  # fmt: skip
    tiny_loader(**overrides)
    doc = tmp_path / "doc.txt"
    doc.write_text("hello world, " * 10)

    def no_long_work(*args, **kwargs):  # the loss by position is the long part (hours at 4x a 16k context)
        raise _Ran

    monkeypatch.setattr(report, "loss_by_position", no_long_work)
    with pytest.raises(ValueError, match="evict"):
        run_eval("run", doc, tmp_path / "ev", max_len=16, passkey_lengths=[200], depths=[0.5], trials=1, digits=2,
                 compare_evict=True, progress=False)  # fmt: skip


def test_window_zero_is_refused(tiny_loader, tmp_path):
    tiny_loader()
    doc = tmp_path / "doc.txt"
    doc.write_text("hello world, " * 10)
    with pytest.raises(ValueError, match="window"):
        run_eval("run", doc, tmp_path / "ev", max_len=16, passkey_lengths=[200], depths=[0.5], trials=1, digits=2,
                 window=0, progress=False)  # fmt: skip
