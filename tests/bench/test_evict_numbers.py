"""The eviction benchmark's memory fractions, batch sizes, speeds and targets, against counts done by hand.

Tiny preset on CPU (float32): 4 layers, 4 heads of 32 = 4 KV heads; a block is 64 keys of one KV head: K and V
(2 x 32 x 4 bytes each key) and c (4 bytes for the one query head of its group). A full cache of max_len
positions holds ceil(max_len / 64) blocks per (layer, KV head) (block-aligned, as the pool is).

Catches: peak fraction over both sequences' bytes; full bytes per sequence not divided by the batch;
the reserved block per (layer, KV head) dropped from the evicting batch's bytes; floor for ceil in the block
count; min and max of the per-head fractions swapped; tokens/s without the batch; batch and speed ratios
inverted; the held target's comparison reversed or 0.15 -> 0.25; GB printed as GiB."""

from __future__ import annotations

import json
import math

import pytest

from foxacp.bench import evict
from foxacp.infer.generate import CHECK_EVERY
from tests.train.conftest import one_thread  # noqa: F401  (autouse: tiny models run fastest on one thread)

STEPS, BUDGET_GB, LAYERS, HKV, D, HQ = 3, 0.02, 4, 4, 32, 4
BLOCK_BYTES = 64 * (2 * D * 4 + 4 * (HQ // HKV))
DECODE_S = 0.5


def test_tiny_run_by_hand(tmp_path, monkeypatch):
    monkeypatch.setattr(evict, "time_decode", lambda step, first, steps, device: DECODE_S)
    out = tmp_path / "evict"
    args = ["--preset", "tiny", "--contexts", "300,600", "--budget-gb", str(BUDGET_GB), "--steps", str(STEPS),
            "--chunk", "128", "--attn-backend", "torch", "--out", str(out)]  # fmt: skip
    assert evict.main(args) == 0
    result = json.loads((out / "evict.json").read_text())
    for r in result["memory"]:
        max_len = r["context"] + STEPS + 2 * CHECK_EVERY
        full = LAYERS * HKV * math.ceil(max_len / 64) * BLOCK_BYTES  # per sequence
        assert r["full_bytes_per_seq"] == full
        assert r["peak_fraction"] == pytest.approx(r["peak_blocks_per_seq"] * BLOCK_BYTES / full)
        assert r["head_fraction_min"] <= r["held_fraction"] <= r["head_fraction_max"]
        assert r["head_fraction_min"] < r["head_fraction_max"]  # the synthetic heads forget at different rates
    mem = result["memory"][-1]
    full, ev = result["batch"]
    budget = BUDGET_GB * 1e9
    assert full["bytes_per_seq"] == mem["full_bytes_per_seq"]
    assert full["batch"] == int(budget // mem["full_bytes_per_seq"])
    # the busiest layer's peak plus one reserved block per KV head, in every layer, +2%
    per_seq = 1.02 * LAYERS * (mem["peak_layer_blocks_per_seq"] + HKV) * BLOCK_BYTES
    assert ev["bytes_per_seq"] == pytest.approx(per_seq)
    assert ev["batch"] == int(budget // per_seq)
    for r in (full, ev):
        assert r["tokens_per_s"] == pytest.approx(r["batch"] * STEPS / DECODE_S)
    t = result["targets"]
    assert t["batch_ratio"]["value"] == pytest.approx(ev["batch"] / full["batch"])
    assert t["speed_ratio"]["value"] == pytest.approx(ev["tokens_per_s"] / full["tokens_per_s"])


def test_verdicts_by_hand():
    mem = [{"context": 16384, "held_fraction": 0.30}, {"context": 65536, "held_fraction": 0.20}]
    batch = [
        {"mode": "full", "batch": 10, "tokens_per_s": 100.0},
        {"mode": "evict", "batch": 35, "tokens_per_s": 150.0},
    ]
    v = evict.verdicts(mem, batch)
    assert v["held_16k"]["met"] is True and v["held_64k"]["met"] is False  # 0.30 <= 0.35; 0.20 > 0.15
    assert v["batch_ratio"]["value"] == pytest.approx(3.5) and v["batch_ratio"]["met"] is True
    assert v["speed_ratio"]["value"] == pytest.approx(1.5) and v["speed_ratio"]["met"] is False
    assert evict.verdicts([{"context": 65536, "held_fraction": 0.14}], [])["held_64k"]["met"] is True


def test_markdown_prints_decimal_gigabytes():
    meta = {"preset": "x", "dtype": "bf16", "gates": "g", "device": "d", "commit": "c", "kernel_max_abs_err": 0.0}
    rows = [{"context": 65536, "mode": "full", "batch": 40, "bytes_per_seq": 2.5e9, "tokens_per_s": 10.0}]
    assert "| 65536 | full | 40 | 2.50 | 10 |" in evict.markdown(meta, [], rows, {})
