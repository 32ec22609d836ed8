"""FLOP accounting and the result files (fake timings only)."""

import json
import re

import pytest

from foxacp.bench.report import (
    Row,
    causal_attention_flops,
    derive,
    environment,
    git_commit,
    load_results,
    merge,
    plot,
    summary,
    tflops,
    write_results,
)


def test_causal_flops_convention():
    # fwd: two matmuls of 2*T*T*D, halved for causality; fwd+bwd = 3.5x fwd.
    assert causal_attention_flops(1, 1, 2, 1, "fwd") == 8.0
    assert causal_attention_flops(1, 1, 2, 1, "fwdbwd") == 28.0
    b, h, t, d = 8, 24, 4096, 64
    assert causal_attention_flops(b, h, t, d, "fwd") == 2 * b * h * t * t * d
    with pytest.raises(ValueError):
        causal_attention_flops(1, 1, 1, 1, "bwd")
    assert tflops(2e12, 1000.0) == pytest.approx(2.0)


def _rows():
    shape = {"heads": 24, "head_dim": 64, "batch": 8, "seqlen": 4096, "mode": "fwdbwd"}
    return [
        Row("sdpa-cudnn", **shape, ms=4.0, flop_saving=0.0),
        Row("foxacp-acp", **shape, ms=2.0, flop_saving=0.6, search_ms=0.1, ref_rel_err=3e-3),
        Row("fla-fox", **shape, status="skipped", note="fla not importable"),
        Row("foxacp-exact", **shape, ms=3.9, flop_saving=0.0),
    ]


def test_derive():
    rows = _rows()
    derive(rows)
    cudnn, acp, fla, exact = (r.derived for r in rows)
    flops = causal_attention_flops(8, 24, 4096, 64, "fwdbwd")
    assert acp["flops_dense_causal"] == flops
    assert acp["tflops_dense_equiv"] == pytest.approx(flops / 2e-3 / 1e12)
    assert acp["tflops_visited"] == pytest.approx(0.4 * flops / 2e-3 / 1e12)
    assert acp["search_share"] == pytest.approx(0.05)
    assert acp["vs_cudnn"] == pytest.approx(0.5) and cudnn["vs_cudnn"] == pytest.approx(1.0)
    assert "tflops_dense_equiv" not in fla
    assert acp["vs_bound"] == pytest.approx(2.0 / (1.15 * 0.4 * 3.9 + 0.1)) and "vs_bound" not in exact


def test_git_commit(tmp_path):
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", git_commit(".")) or git_commit(".") == "unknown"
    assert git_commit(tmp_path) == "unknown"


def test_results_files_name_device_versions_commit(tmp_path):
    rows = _rows()
    meta = environment(tmp_path)
    meta["settings"] = {"gates": "synthetic"}
    json_path, md_path = write_results(rows, meta, tmp_path / "res", "attention-test")
    data = json.loads(json_path.read_text())
    for key in ("device", "torch", "triton", "date", "commit"):
        assert data["meta"][key], key
    assert len(data["rows"]) == 4 and data["rows"][1]["derived"]["vs_cudnn"] == pytest.approx(0.5)
    md = md_path.read_text()
    for text in (meta["device"], meta["torch"], meta["triton"], meta["date"], "commit", "fla not importable"):
        assert text in md
    assert "| 24x64 | 4096 | 8 | fwdbwd | foxacp-acp | 2.000 | 60.0% |" in md
    png = plot(rows, tmp_path / "res" / "attention-test.png")
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"
    text = summary(rows)
    assert "foxacp-acp" in text and "skipped" in text and "60.0%" in text and "0.50" in text


def test_merge_runs(tmp_path):
    meta = environment(tmp_path)
    a, b = _rows()[:2], _rows()[2:]
    write_results(a, meta, tmp_path, "a")
    write_results(b, meta, tmp_path, "b")
    files = merge([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "m", "merged")
    data = json.loads(files[0].read_text())
    assert [r["row"] for r in data["rows"]] == ["sdpa-cudnn", "foxacp-acp", "fla-fox", "foxacp-exact"]
    assert data["rows"][1]["derived"]["vs_bound"] == pytest.approx(2.0 / (1.15 * 0.4 * 3.9 + 0.1))  # across files
    assert data["meta"]["merged_from"] == ["a.json", "b.json"] and files[-1].suffix == ".png"
    write_results(b, {**meta, "commit": "other"}, tmp_path, "c")
    with pytest.raises(ValueError, match="commit"):
        merge([tmp_path / "a.json", tmp_path / "c.json"], tmp_path / "m", "bad")


def test_merge_cli_writes_one_result_set(tmp_path):
    from foxacp.bench.report import main

    meta = {**environment(tmp_path), "device": "NVIDIA H100 80GB HBM3", "commit": "c4b333e" + "0" * 33}
    a, b = _rows(), _rows()
    for r in b:
        r.heads = 12
    write_results(a, meta, tmp_path, "a")
    write_results(b, meta, tmp_path, "b")
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--results-dir", str(tmp_path / "res")]) == 0
    (folder,) = (tmp_path / "res").iterdir()
    assert folder.name == f"{meta['date'][:10]}-c4b333e-attention-h100"
    assert sorted(p.name for p in folder.iterdir()) == ["attention.json", "attention.md", "attention.png"]
    assert len(load_results(folder / "attention.json")[1]) == len(a) + len(b)
