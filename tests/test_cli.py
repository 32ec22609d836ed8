"""The foxacp command line: train end to end, resume, plot, export-gates, demo, bench, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from foxacp.cli import main
from foxacp.train.metrics import read_log
from tests.train.conftest import SMALL, cache_dir, corpus_dir, one_thread  # noqa: F401  (fixtures)


@pytest.fixture
def data_args(corpus_dir, cache_dir):  # noqa: F811
    return ["--data", str(corpus_dir), "--set", *SMALL, f"cache_dir={cache_dir}"]


def test_train_writes_log_checkpoint_and_plot_then_resumes(data_args, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *data_args, "steps=3", "eval_every=3"]) == 0
    assert (out / "log.jsonl").exists() and (out / "plot.png").stat().st_size > 10_000
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000003"
    assert (out / "checkpoints" / "step_000003" / "model.safetensors").exists()
    kinds = [r["kind"] for r in read_log(out)]
    assert kinds.count("train") == 3 and kinds.count("eval") == 1
    assert "plot:" in capsys.readouterr().out

    # --resume with no path continues --out from its latest checkpoint, with the saved config.
    assert main(["train", "--resume", "--out", str(out), "--steps", "5"]) == 0
    steps = [r["step"] for r in read_log(out) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000005"

    png = tmp_path / "p.png"
    assert main(["plot", str(out), "--out", str(png)]) == 0 and png.exists()

    gates = tmp_path / "gates.safetensors"
    assert main(["export-gates", str(out), "--out", str(gates), "--seq-len", "64", "--batch-size", "2"]) == 0
    saved = load_file(gates)
    assert saved["log_fgate"].shape == (2, 2, 64, 2) and saved["log_fgate"].dtype == torch.float32
    assert bool((saved["log_fgate"] <= 0).all()) and saved["input_ids"].shape == (2, 64)


def test_demo_prints_summary(data_args, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *data_args[2:], f"corpus={data_args[1]}", "steps=4"]) == 0
    text = capsys.readouterr().out
    for needle in ("demo done", "final train loss", "tokens/s", "ACP FLOP saving", "log.jsonl", "plot.png"):
        assert needle in text
    assert (out / "plot.png").exists()


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["train", "--set", "learning_rate=1"]) == 2
    assert "unknown field 'learning_rate'" in capsys.readouterr().err
    assert main(["train", "--preset", "2B"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main(["export-gates", str(tmp_path / "nope"), "--out", str(tmp_path / "g.safetensors")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_bench_forwards_its_arguments(monkeypatch):
    import foxacp.bench.attention as bench

    seen = []
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(argv) or 0)
    assert main(["bench", "--quick", "--contexts", "4k"]) == 0
    assert seen == [["--quick", "--contexts", "4k"]]


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "foxacp.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "export-gates" in proc.stdout
