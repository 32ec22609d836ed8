"""The decode attention benchmark's CPU-side parts: gate fitting, bytes read, the float64 check, results."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from foxacp.bench import decode_attention as bench
from foxacp.ops.kvcache import DECODE_BLOCK


def _cache(B=2, T=1000, Hq=4, Hkv=2, D=32, target=0.6):
    profile = bench.fit_profile(T, Hq, Hkv, D, target, "cpu")
    gates = bench.synthetic_log_fgate(2, T, Hq, profile)
    return bench.make_cache(B, T, Hq, Hkv, D, gates, "synthetic", "cpu"), profile


def test_fitted_profile_prunes_the_target_share():
    cache, profile = _cache(B=1, T=2048, target=0.6)
    _, _, saving = bench.kv_bytes_read(cache, bench.LOG_EPS)
    assert abs(saving - 0.6) < 0.05
    slower = bench.GateProfile(max_window_factor=profile.max_window_factor * 4)
    c = bench._rebased_c(bench.synthetic_log_fgate(1, 2048, 4, slower), cache.lens)
    assert bench._saving(c, cache.lens, cache.qk_bound, 32, 2) < saving  # slower forgetting prunes less


def test_bytes_read_count_the_blocks_a_group_keeps():
    cache, _ = _cache()
    B, T, Hq, Hkv, D = cache.shape
    dense, _, saving = bench.kv_bytes_read(cache, None)
    assert dense == 2 * B * T * Hkv * D * 2 and saving == 0.0
    acp, _, saving = bench.kv_bytes_read(cache, bench.LOG_EPS)
    assert 0 < saving < 1
    # A group loads a block when any of its heads keeps it: at least the kept share, at most all.
    assert (1 - saving) * dense <= acp + 2 * B * Hkv * DECODE_BLOCK * D * 2 and acp < dense
    assert acp % (2 * D * 2) == 0


def test_check_foxacp_passes_and_catches_a_wrong_kernel(monkeypatch):
    cache, _ = _cache(B=2, T=300)
    assert bench.check_foxacp(cache, None) < 1e-2
    assert bench.check_foxacp(cache, bench.LOG_EPS) < 1e-2
    import foxacp

    wrong = lambda *a, **kw: torch.zeros_like(a[0])  # noqa: E731
    monkeypatch.setattr(foxacp, "forgetting_attention_with_kvcache", wrong)
    try:
        bench.check_foxacp(cache, None)
    except AssertionError as err:
        assert "relative error" in str(err)
    else:
        raise AssertionError("the check let a wrong output through")


def test_results_files_and_derived_ratios(tmp_path):
    rows = [
        bench.Row("foxacp-exact", "", 24, 24, 64, 1, 4096, ms=0.02, kv_bytes=10),
        bench.Row("foxacp-acp", "", 24, 24, 64, 1, 4096, ms=0.01, saving=0.7, kv_bytes=3),
        bench.Row("foxacp-exact", "splits=4", 24, 24, 64, 1, 4096, ms=0.04, kv_bytes=10),
        bench.Row("foxacp-acp", "splits=4", 24, 24, 64, 1, 4096, ms=0.01, saving=0.7, kv_bytes=3),
        bench.Row("sdpa-cudnn", "", 24, 24, 64, 1, 4096, ms=0.025, kv_bytes=10),
        bench.Row("sdpa-flash", "", 24, 24, 64, 1, 4096, status="skipped", note="no kernel"),
    ]
    meta = {"device": "NVIDIA H200", "date": "2026-12-04T10:00:00Z", "commit": "abcdef1234567890", "settings": {}}
    paths = bench.write_results(rows, meta, tmp_path)
    acp = rows[1].derived
    assert math.isclose(acp["vs_cudnn"], 0.4)
    assert math.isclose(acp["acp_target_ms"], 1.15 * 0.3 * 0.02 + 0.010)
    assert math.isclose(rows[3].derived["acp_target_ms"], 1.15 * 0.3 * 0.04 + 0.010)  # its own variant's exact
    saved = json.loads(paths[0].read_text())
    assert [r["row"] for r in saved["rows"]] == [r.row for r in rows]
    assert "| 24/24x64 | 4096 | 1 | sdpa-flash | skipped |" in paths[1].read_text()
    assert str(bench.out_dir_for(meta, bench.parse_args([]))) == "results/2026-12-04-abcdef1-decode-attention-h200"


@pytest.mark.parametrize(
    "argv,name",
    [
        ([], "decode-attention"),
        (["--quick"], "decode-attention-quick"),
        (["--gates", "g.pt"], "decode-attention-recorded"),
        (["--profile", "uniform", "--target-saving", "0.5"], "decode-attention-uniform-saving50"),
        (["--splits", "4,8"], "decode-attention-sweep"),
        (["--contexts", "16k"], "decode-attention-partial"),
        (["--gates", "g.pt", "--tag", "study-l3"], "decode-attention-study-l3"),
    ],
)
def test_a_run_that_departs_from_the_full_default_one_is_named_so(argv, name):
    """Only the full run on synthetic gates stands in the index as decode-attention (a recorded-gates run, a
    sweep or part of the grid never replaces it)."""
    meta = {"date": "2026-12-04T10:00:00Z", "commit": "abcdef1" + "0" * 33, "device": "NVIDIA H200"}
    assert bench.out_dir_for(meta, bench.parse_args(argv)).name == f"2026-12-04-abcdef1-{name}-h200"


def test_quick_arguments():
    args = bench.parse_args(["--quick", "--configs", "32/8x128"])
    assert args.batches == [1, 8] and args.contexts == [16384, 65536] and args.configs == [(32, 8, 128)]
    assert args.warmup <= 200 and args.variants == [("", {})]
    sweep = bench.parse_args(["--splits", "8,16", "--stages", "2"]).variants
    assert sweep == [
        ("splits=8 stages=2", {"splits": 8, "stages": 2}),
        ("splits=16 stages=2", {"splits": 16, "stages": 2}),
    ]
    schedules = bench.parse_args(["--schedules", "even,balanced"]).variants
    assert [label for label, _ in schedules] == ["schedule=even", "schedule=balanced"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--schedules", "fast"])
    assert bench.parse_args(["--contexts", "4k,100"]).contexts == [4096, 100]


def test_run_shape_checks_times_and_skips(monkeypatch):
    cache, _ = _cache(B=1, T=200)
    monkeypatch.setattr(bench, "graphed", lambda fn: fn)  # CUDA graphs need a GPU; the rows run eagerly here
    calls = []
    timer = lambda fn: (calls.append(fn()), 0.5)[1]  # noqa: E731
    rows = bench.run_shape(cache, ["foxacp-exact", "foxacp-acp", "sdpa-cudnn"], 1e12, timer)
    exact, acp, cudnn = rows
    assert exact.status == acp.status == "ok" and exact.ms == 0.5 and len(calls) == 2
    assert exact.ref_rel_err < 1e-2 and acp.ref_rel_err < 1e-2 and acp.saving > 0
    assert exact.hbm_share == pytest.approx((exact.kv_bytes + exact.c_bytes) / 1e12 * 1e3 / 0.5)
    assert exact.c_bytes == 4 * 200 * exact.heads_q and acp.kv_bytes < exact.kv_bytes
    assert cudnn.status == "skipped" and "RuntimeError" in cudnn.note  # no cuDNN attention on the CPU


def test_run_shape_checks_every_kernel_variant(monkeypatch):
    cache, _ = _cache(B=2, T=300)
    half = {n: getattr(cache, n).half() for n in ("q", "k", "v")}  # the interpreter takes no bf16
    cache = dataclasses.replace(cache, **half)
    monkeypatch.setattr(bench, "graphed", lambda fn: fn)
    variants = bench.variants([2], [None], ["even", "balanced"])
    rows = bench.run_shape(cache, ["foxacp-acp"], 1e12, lambda fn: (fn(), 0.5)[1], variants)
    assert [r.variant for r in rows] == ["splits=2 schedule=even", "splits=2 schedule=balanced"]
    assert all(r.status == "ok" and r.ref_rel_err < 1e-2 for r in rows)


def test_uniform_profile_gives_every_head_the_target_saving():
    T, Hq, Hkv, D, target = 2048, 4, 2, 32, 0.6
    lens = torch.tensor([T], dtype=torch.int32)
    spread = bench.fit_profile(T, Hq, Hkv, D, target, "cpu")
    uniform = bench.fit_profile(T, Hq, Hkv, D, target, "cpu", uniform=True)
    assert uniform.min_window == uniform.max_window_factor * T
    saving = {}
    for name, profile in (("spread", spread), ("uniform", uniform)):
        c = bench._rebased_c(bench.synthetic_log_fgate(1, T, Hq, profile), lens)
        per_head = [bench._saving(c[:, :, h : h + 1], lens, math.sqrt(D), D, 1) for h in range(Hq)]
        saving[name] = (bench._saving(c, lens, math.sqrt(D), D, Hkv), per_head)
    for total, _ in saving.values():
        assert abs(total - target) < 0.05
    assert max(saving["uniform"][1]) - min(saving["uniform"][1]) < 0.05  # every head alike
    assert max(saving["spread"][1]) - min(saving["spread"][1]) > 0.5  # from nearly all pruned to none


def test_foxacp_rows_read_c_next_to_k_and_v():
    """Hand count, B=1, T=128, Hq=4, Hkv=2, D=32, bf16, exact: K and V 2*128*2*32*2 = 32768 bytes (the floor), c
    128*4*4 = 2048 bytes (float32, every query head), which the HBM share counts as read."""
    B, T, Hq, Hkv, D = 1, 128, 4, 2, 32
    k = torch.zeros(B, T, Hkv, D, dtype=torch.bfloat16)
    q = torch.zeros(B, 1, Hq, D, dtype=torch.bfloat16)
    cache = bench.Cache(q, k, k.clone(), torch.zeros(B, T, Hq), torch.tensor([T], dtype=torch.int32), D**0.5, "x")
    assert bench.kv_bytes_read(cache, None) == (32768, 2048, 0.0)
