"""Decode attention benchmark: bytes read, HBM floor and share, vs cuDNN and vs the ACP target, checked against
counts done by hand on a cache whose pruning is known exactly.

The cache: B=1, T=200 (blocks of 64: three full and a last one of 8 keys), 4 query heads in 2 KV groups, D=32,
bf16. Query head 1 never forgets; heads 0, 2, 3 forget everything before the last block (a log gate of -1e4 at
its first key), so ACP keeps only the last block for them. Group 0 (heads 0, 1) still loads all 200 keys (head 1
keeps them), group 1 (heads 2, 3) loads the last block only: 8 keys. Pruned (query head, block) pairs: 3 heads x
3 blocks of 16 = 9/16.

Catches: K and V counted once; c in bf16 bytes; blocks loaded only when every head keeps them; the last
partial block counted whole; exact's c counted per KV head x group twice; the floor counting c; the HBM share
without c or inverted; vs cuDNN inverted; the ACP target without its 10 us, with 1 - saving in place of the kept
bytes, with c in the kept share, with 1 us, or inverted; the copy bandwidth as one direction."""

from __future__ import annotations

import math

import pytest
import torch

from foxacp.bench import decode_attention as bench
from foxacp.ops.kvcache import DECODE_BLOCK

B, T, HQ, HKV, D = 1, 200, 4, 2, 32


def known_cache() -> bench.Cache:
    assert DECODE_BLOCK == 64
    log_fgate = torch.zeros(B, T, HQ, dtype=torch.float64)
    last_block = (T - 1) // 64 * 64  # 192
    log_fgate[:, last_block, [0, 2, 3]] = -1e4
    lens = torch.full((B,), T, dtype=torch.int32)
    c = bench._rebased_c(log_fgate, lens)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, 1, HQ, D, generator=gen).to(torch.bfloat16)
    k = torch.randn(B, T, HKV, D, generator=gen).to(torch.bfloat16)
    v = torch.randn(B, T, HKV, D, generator=gen).to(torch.bfloat16)
    return bench.Cache(q, k, v, c, lens, math.sqrt(D), "hand")


KV_PER_KEY = 2 * D * 2  # K and V, bf16, per key and KV head
C_PER_KEY = 4 * (HQ // HKV)  # float32 c of each query head of the group


def test_bytes_read_by_hand():
    cache = known_cache()
    kv, c, saving = bench.kv_bytes_read(cache, None)
    assert (kv, c, saving) == (B * T * HKV * KV_PER_KEY, B * T * HKV * C_PER_KEY, 0.0)
    assert c == B * T * HQ * 4
    kv, c, saving = bench.kv_bytes_read(cache, bench.LOG_EPS)
    keys = 200 + 8  # group 0 all keys, group 1 the last (partial) block
    assert (kv, c) == (keys * KV_PER_KEY, keys * C_PER_KEY)
    assert saving == pytest.approx(9 / 16)


def test_floor_share_and_ratios_by_hand(monkeypatch):
    cache = known_cache()
    monkeypatch.setattr(bench, "graphed", lambda fn: fn)
    times = {"foxacp-exact": 0.5, "foxacp-acp": 0.2}
    bandwidth = 1e12
    rows = []
    for name, ms in times.items():
        rows += bench.run_shape(cache, [name], bandwidth, lambda fn, ms=ms: (fn(), ms)[1])
    exact, acp = rows
    assert exact.status == acp.status == "ok"
    # floor: the K and V bytes alone over the bandwidth, in ms; share: K, V and c at the measured time
    assert exact.floor_ms == pytest.approx(B * T * HKV * KV_PER_KEY / bandwidth * 1e3)
    assert acp.floor_ms == pytest.approx(208 * KV_PER_KEY / bandwidth * 1e3)
    assert exact.hbm_share == pytest.approx(B * T * HKV * (KV_PER_KEY + C_PER_KEY) / bandwidth * 1e3 / 0.5)
    assert acp.hbm_share == pytest.approx(208 * (KV_PER_KEY + C_PER_KEY) / bandwidth * 1e3 / 0.2)
    cudnn = bench.Row("sdpa-cudnn", "", HQ, HKV, D, B, T, ms=0.25, kv_bytes=B * T * HKV * KV_PER_KEY)
    bench.derive([exact, acp, cudnn])
    assert exact.derived["vs_cudnn"] == pytest.approx(0.5 / 0.25)
    assert acp.derived["vs_cudnn"] == pytest.approx(0.2 / 0.25)
    kept = 208 / 400  # share of K/V bytes the ACP kernel still loads (not 1 - 9/16)
    target = 1.15 * kept * 0.5 + 0.010  # 1.15 x kept x exact + 10 us, in ms
    assert acp.derived["acp_target_ms"] == pytest.approx(target, rel=1e-9)
    assert acp.derived["vs_target"] == pytest.approx(0.2 / target, rel=1e-9)
    line = next(x for x in bench.table(rows) if "foxacp-acp" in x)
    assert f"| {acp.hbm_share:.1%} |" in line


def test_copy_bandwidth_counts_read_and_write(monkeypatch):
    monkeypatch.setattr(bench, "bench_ms", lambda fn, warmup, rep: 0.5)
    assert bench.copy_bandwidth(torch.device("cpu"), nbytes=4096) == pytest.approx(2 * 4096 / 0.5e-3)
