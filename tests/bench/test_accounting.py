"""What the benchmarks report: the decode ACP target follows the bytes a GQA group loads, result folders are
sets the index reads, and merged parts share their settings. CPU only (no kernel runs here)."""

from __future__ import annotations

import json

import pytest
import torch

from foxacp.bench import decode_attention as dattn
from foxacp.bench.results import SET_NAME

# --- decode_attention: the ACP target of GQA rows uses the (query head, block) saving, not the bytes read ---


def test_decode_acp_target_follows_the_bytes_a_gqa_group_loads():
    """Decode is memory-bound: the ACP target (time proportional to the work kept) must scale exact's time by
    the share of K/V bytes the kernel still loads. With GQA a KV block is loaded when ANY query head of its
    group keeps it, so that share is larger than 1 - saving (saving counts (query head, block) pairs).
    derive() uses 1 - saving, which makes the target of every GQA row too small (vs_target too large)."""
    T, Hq, Hkv, D = 2048, 8, 2, 32
    profile = dattn.fit_profile(T, Hq, Hkv, D, 0.7, "cpu")
    gates = dattn.synthetic_log_fgate(2, T, Hq, profile)
    cache = dattn.make_cache(1, T, Hq, Hkv, D, gates, "synthetic", "cpu")
    dense, _, _ = dattn.kv_bytes_read(cache, None)
    acp_bytes, _, saving = dattn.kv_bytes_read(cache, dattn.LOG_EPS)
    loaded = acp_bytes / dense
    assert loaded > (1 - saving) + 0.02  # the premise: a group loads more than the mean head keeps

    exact = dattn.Row("foxacp-exact", "", Hq, Hkv, D, 1, T, ms=1.0, kv_bytes=dense)
    acp = dattn.Row("foxacp-acp", "", Hq, Hkv, D, 1, T, ms=0.5, saving=saving, kv_bytes=acp_bytes)
    dattn.derive([exact, acp])
    want = dattn.ACP_SLACK * loaded * exact.ms + dattn.ACP_OVERHEAD_MS
    assert acp.derived["acp_target_ms"] == pytest.approx(want, rel=1e-6), (
        f"target {acp.derived['acp_target_ms']:.4f} ms uses 1 - saving = {1 - saving:.3f}; "
        f"the kernel loads {loaded:.3f} of the K/V bytes"
    )


# --- result folders that the index cannot read or misnames ---


def test_decode_attention_default_folder_is_a_result_set(tmp_path):
    """out_dir_for writes <date>-<12-char commit>-decode-attention-<nvidia-h200>: SET_NAME (7-char commit,
    one-word device) does not match it, so `python -m foxacp.bench.index` raises on the whole results/ folder."""
    from foxacp.bench.index import read_set

    meta = {"date": "2026-12-04T16:23:57Z", "commit": "fe19cb2" + "0" * 33, "device": "NVIDIA H200"}
    folder = tmp_path / dattn.out_dir_for(meta, dattn.parse_args([])).name
    folder.mkdir()
    (folder / "decode_attention.json").write_text(json.dumps({"meta": meta, "rows": []}))
    s = read_set(folder)  # raises ValueError today
    assert (s.commit, s.benchmark, s.device) == ("fe19cb2", "decode-attention", "h200")


def test_decode_e2e_default_folder_names_benchmark_and_device(tmp_path):
    """decode._default_out puts the raw device name with dashes ("nvidia-h200") in the folder: the index
    reads benchmark "decode-e2e-nvidia" and device "h200". It also drops "-dirty" from the commit."""
    from foxacp.bench.decode import _default_out, parse_args

    meta = {"date": "2026-12-04T20:24:31Z", "commit": "20966ce9ffb7d3c752b7fb97e5b53aab57f91fd6-dirty",
            "device": "NVIDIA H200"}  # fmt: skip
    m = SET_NAME.fullmatch(_default_out(meta, parse_args([])).name)
    assert m is not None
    assert (m["commit"], m["what"], m["device"]) == ("20966ce-dirty", "decode-e2e", "h200")
    torch.save(-torch.rand(1, 64, 4) * 0.1, tmp_path / "g.pt")
    partial = parse_args(["--contexts", "16384", "--gates", str(tmp_path / "g.pt"), "--schedule", "balanced"])
    assert SET_NAME.fullmatch(_default_out(meta, partial).name)["what"] == "decode-e2e-recorded-balanced-partial"
    assert SET_NAME.fullmatch(_default_out(meta, parse_args(["--tag", "x1"])).name)["what"] == "decode-e2e-x1"


# --- report.merge joins parts run with different settings under the first part's label ---


def test_merge_refuses_parts_with_different_settings(tmp_path):
    """Two attention parts, one on synthetic gates and one on recorded gates (or another --warmup, --tokens,
    --log-eps ...), merge without complaint; the merged set's meta.settings describe the first part only."""
    from foxacp.bench import report

    base = {"device": "NVIDIA H200", "torch": "2.11", "triton": "3.6", "commit": "abcdef1", "date": "2026-12-04"}
    a = {**base, "settings": {"gates": {"kind": "synthetic"}, "do_bench": "warmup 1000 ms"}}
    b = {**base, "settings": {"gates": "gates.pt layer 0", "do_bench": "warmup 25 ms"}}
    paths = []
    for i, meta in enumerate((a, b)):
        row = report.Row("foxacp-exact", 24, 64, 8, 4096, "fwd", ms=1.0 + i)
        p = tmp_path / f"part{i}.json"
        p.write_text(json.dumps({"meta": meta, "rows": [row.__dict__]}))
        paths.append(p)
    with pytest.raises(ValueError):
        report.merge(paths, tmp_path / "merged", "attention")
