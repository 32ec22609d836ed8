"""The training-attention benchmark keeps the median of a row's interleaved rounds. The existing test's timer
gives each row an arithmetic series (1, 3, 5), whose mean equals its median, so a mean survives it; here the
rounds are 1, 9, 25 (median 9, mean 11.67).

Catches: src/foxacp/bench/attention.py time_row: statistics.median(row.ms_rounds) -> statistics.mean(...)."""

from __future__ import annotations

import json

from foxacp.bench.attention import main

CPU_RUN = ["--device", "cpu", "--backend", "torch", "--no-compile", "--tokens", "256", "--heads", "12"]
CPU_RUN += ["--head-dim", "64", "--contexts", "128,256", "--max-bwd-context", "128"]


def test_rounds_keep_the_median_not_the_mean(tmp_path):
    calls = []

    def timer(fn, grad_to_none=None):
        calls.append(fn)
        return float(len(calls)) ** 2  # 1, 4, 9, 16, 25, 36: round-major over the two rows

    args = [*CPU_RUN, "--contexts", "128", "--modes", "fwd", "--rows", "foxacp-exact,sdpa-flash", "--rounds", "3"]
    assert main([*args, "--results-dir", str(tmp_path)], timer=timer) == 0
    rows = {r["row"]: r for r in json.loads(next(tmp_path.glob("*/attention.json")).read_text())["rows"]}
    assert rows["sdpa-flash"]["ms_rounds"] == [1.0, 9.0, 25.0] and rows["sdpa-flash"]["ms"] == 9.0
    assert rows["foxacp-exact"]["ms_rounds"] == [4.0, 16.0, 36.0] and rows["foxacp-exact"]["ms"] == 16.0
