"""throughput.measure's reported numbers on CPU, against values worked out here by hand: a deterministic clock
makes every step's time known, and a patched peak FLOP/s makes the MFU columns appear (CPU reports none).

Catches: median -> mean of the step times; tokens per step without the accumulation factor; step_ms
divided by accum; MFU with the dense count; MFU dense-eq. with another span; min/max of the steps swapped in the
table; the table's MFU column showing the dense-equivalent one."""

from __future__ import annotations

import dataclasses
import json
import statistics
import types

import pytest
import torch

from foxacp.bench import throughput
from foxacp.model import FoxLM
from foxacp.train.config import build_model_config, preset_config

T, MB, ACCUM, VOCAB, STEPS, ROUNDS = 48, 1, 2, 80, 2, 2
FRACTION = 0.25  # the attention share the patched ACP summary reports (48 tokens are one tile: none pruned)
PEAK = 1e8  # small: CPU MFUs large enough to tell apart at the table's 0.1%


class CubicClock:
    """perf_counter() returning n**3 ms at its n-th call: consecutive differences 3n^2+3n+1 ms grow convexly,
    so the median of a run of step times is below their mean."""

    def __init__(self) -> None:
        self.n = 0

    def perf_counter(self) -> float:
        self.n += 1
        return self.n**3 * 1e-3


def matmul_weights(context: int) -> int:
    tcfg = dataclasses.replace(preset_config("tiny"), seq_len=context, model_overrides={"vocab_size": VOCAB})
    with torch.device("meta"):
        model = FoxLM(build_model_config(tcfg))
    # every Linear weight costs 2 FLOPs per token forward, 6 with the backward (the embedding is a lookup)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


@pytest.fixture
def rows(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(throughput, "time", types.SimpleNamespace(perf_counter=CubicClock().perf_counter))
    monkeypatch.setattr(throughput, "peak_flops", lambda device, override=None: (PEAK, "test peak"))
    real = throughput.acp_summary
    monkeypatch.setattr(throughput, "acp_summary", lambda v, c: real(v, c) | {"attn_fraction": FRACTION})
    args = ["--presets", "tiny", "--contexts", str(T), "--micro-batch", str(MB), "--vocab", str(VOCAB),
            "--warmup", "1", "--steps", str(STEPS), "--rounds", str(ROUNDS), "--gates-regimes", "init",
            "--tokens-per-step", str(ACCUM * MB * T), "--out", str(tmp_path)]  # fmt: skip
    assert throughput.main(args) == 0
    recs = [json.loads(x) for x in (tmp_path / "throughput.jsonl").read_text().splitlines()]
    return recs, (tmp_path / "throughput.md").read_text()


def test_throughput_numbers_follow_the_median_step_and_the_flop_count(rows):
    recs, md = rows
    n_layers, d_model = 4, 128  # the tiny preset
    matmul = matmul_weights(T)
    for r in recs:
        assert r["accum"] == ACCUM and r["tokens_per_step"] == ACCUM * MB * T
        times = r["step_ms_all"]
        assert len(times) == STEPS * ROUNDS and len(set(times)) == len(times)
        median = sorted(times)[len(times) // 2 - 1 : len(times) // 2 + 1]  # an even count: mean of the middle two
        median_ms = sum(median) / 2
        assert statistics.mean(times) > median_ms + 1.0  # the clock makes mean and median differ clearly
        assert r["step_ms"] == pytest.approx(median_ms, abs=0.01)
        tps = ACCUM * MB * T / (median_ms / 1e3)
        assert r["tokens_per_s"] == pytest.approx(tps, rel=1e-4)
        fraction = FRACTION
        # causal attention: 2 matmuls x 2 FLOPs x d_model per (query, key) pair, T/2 keys per query on average, x3
        # with the backward = 6 * d_model * T per token per layer
        attn_dense = n_layers * 6 * d_model * T
        assert r["mfu"] == pytest.approx(tps * (6 * matmul + attn_dense * fraction) / PEAK, rel=1e-4)
        assert r["mfu_dense_equiv"] == pytest.approx(tps * (6 * matmul + attn_dense) / PEAK, rel=1e-4)
        assert f"{r['mfu']:.1%}" != f"{r['mfu_dense_equiv']:.1%}"
        line = next(x for x in md.splitlines() if x.startswith(f"| tiny | {T} | {r['mode']} |"))
        assert f"| {tps / 1e3:.1f}k | {median_ms:.1f} | {min(times):.0f}-{max(times):.0f} |" in line
        assert f"| {r['mfu']:.1%} | {r['mfu_dense_equiv']:.1%} |" in line
