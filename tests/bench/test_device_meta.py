"""The result metadata names the device a benchmark ran on: a ``--device cpu`` run on a GPU host is "cpu", not the
host's GPU (the CPU here has no CUDA, so the test makes torch report an H200; the benchmarks run on the CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.train.conftest import one_thread  # noqa: F401


@pytest.fixture
def gpu_host(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "NVIDIA H200")


def test_evict_meta_names_the_device_it_ran_on(tmp_path, gpu_host):
    from foxacp.bench.evict import main

    out = tmp_path / "evict"
    args = ["--preset", "tiny", "--contexts", "300", "--budget-gb", "0.01", "--steps", "2", "--chunk", "128"]
    assert main([*args, "--device", "cpu", "--attn-backend", "torch", "--out", str(out)]) == 0
    meta = json.loads((out / "evict.json").read_text())["meta"]
    assert meta["device"] == "cpu", meta["device"]


def test_hf_bench_result_set_names_the_device_it_ran_on(tmp_path, gpu_host):
    pytest.importorskip("transformers")
    from foxacp.hf.bench import main

    argv = ["--preset", "tiny", "--batch", "1", "--prompt-len", "5", "--new-tokens", "3", "--vocab-size", "64"]
    argv += ["--paths", "foxacp,dynamic", "--device", "cpu", "--dtype", "float32", "--attn-backend", "torch"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    (folder,) = tmp_path.iterdir()
    assert folder.name.endswith("-hf-generate-cpu"), folder.name
    assert json.loads((folder / "hf-generate.json").read_text())["meta"]["device"] == "cpu"
