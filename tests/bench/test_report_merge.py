"""``python -m foxacp.bench.report`` merging result files must not silently mix conflicting rows, and a
meta that differs must give the documented ValueError."""

from __future__ import annotations

import json

import pytest

from foxacp.bench.report import Row, merge, write_results

META = {"device": "NVIDIA H100 80GB HBM3", "torch": "2", "triton": "3", "date": "2026-11-22T10:00:00Z",
        "commit": "c4b333e" + "0" * 33, "settings": {"gates": "synthetic"}}  # fmt: skip
SHAPE = {"heads": 24, "head_dim": 64, "batch": 8, "seqlen": 4096, "mode": "fwdbwd"}


def test_merge_refuses_two_measurements_of_the_same_row(tmp_path):
    # Two runs that both measured cuDNN and ACP at the same shape, with different times.
    write_results([Row("sdpa-cudnn", **SHAPE, ms=4.0), Row("foxacp-acp", **SHAPE, ms=2.0, flop_saving=0.6)],
                  META, tmp_path, "a")  # fmt: skip
    write_results([Row("sdpa-cudnn", **SHAPE, ms=8.0), Row("foxacp-acp", **SHAPE, ms=2.1, flop_saving=0.6)],
                  META, tmp_path, "b")  # fmt: skip
    try:
        files = merge([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "m", "merged")
    except ValueError:
        return  # refused: fine
    rows = json.loads(files[0].read_text())["rows"]
    keys = [(r["row"], r["heads"], r["head_dim"], r["seqlen"], r["mode"], r["batch"]) for r in rows]
    # Otherwise each (row, shape) may appear once; with duplicates the table shows two ACP rows at one shape and
    # the first file's ACP row gets its "vs cuDNN" from the second file's cuDNN time (2.0 / 8.0 instead of 2.0 / 4.0).
    assert len(keys) == len(set(keys)), f"merged table holds duplicate rows: {keys}"


def test_merge_with_a_missing_meta_key_raises_value_error(tmp_path):
    rows = [Row("sdpa-cudnn", **SHAPE, ms=4.0)]
    write_results(rows, META, tmp_path, "a")
    write_results(rows, {k: v for k, v in META.items() if k != "settings"}, tmp_path, "b")
    with pytest.raises(ValueError, match="settings"):
        merge([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "m", "merged")
