"""throughput.main resumes into an --out only rows measured with the same settings (--vocab, --steps, --micro-batch,
--tokens-per-step, --gates, ...): a run with other settings is refused rather than file old rows under new meta."""

from __future__ import annotations

import json

import pytest

from foxacp.bench import throughput

ARGS = ["--presets", "tiny", "--contexts", "48", "--micro-batch", "1", "--warmup", "1", "--steps", "1",
        "--gates-regimes", "init"]  # fmt: skip


def test_resumed_rows_match_the_meta_they_are_written_under(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the PyTorch paths, as tests/bench/test_throughput.py
    out = ["--out", str(tmp_path / "out")]
    assert throughput.main([*ARGS, "--vocab", "80", *out]) == 0
    with pytest.raises(SystemExit, match="other settings"):
        throughput.main([*ARGS, "--vocab", "96", *out])
    summary = json.loads((tmp_path / "out" / "throughput.json").read_text())
    assert summary["rows"] and all(r["vocab"] == summary["meta"]["vocab"] == 80 for r in summary["rows"])
    assert throughput.main([*ARGS, "--vocab", "80", *out]) == 0  # the same settings resume
