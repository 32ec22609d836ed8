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


def test_train_into_an_existing_run_is_refused_and_overwrite_replaces_it(data_args, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *data_args, "steps=2"]) == 0
    log = (out / "log.jsonl").read_text()
    capsys.readouterr()
    assert main(["train", "--out", str(out), *data_args, "steps=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("foxacp: error: ") and "--resume" in err and "--overwrite" in err
    assert (out / "log.jsonl").read_text() == log
    assert main(["train", "--out", str(out), "--overwrite", *data_args, "steps=1"]) == 0
    assert [r["step"] for r in read_log(out) if r["kind"] == "train"] == [1]


def test_a_failed_resume_leaves_the_config_and_another_preset_is_refused(data_args, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *data_args, "steps=2"]) == 0
    config = (out / "config.json").read_bytes()
    for bad in (["--set", "model.n_heads=5"], ["--set", "lr=-1"], ["--preset", "125M"]):
        assert main(["train", "--resume", "--out", str(out), *bad]) == 2
        assert (out / "config.json").read_bytes() == config, bad
    assert "keeps its preset" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out), "--preset", "tiny", "--set", "steps=3"]) == 0
    start = [r for r in read_log(out) if r["kind"] == "start"][-1]
    assert start["resume_changes"] == {"steps": [2, 3]}


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(data_args, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *data_args, "steps=1"]) == 0
    capsys.readouterr()
    if not torch.cuda.is_available():
        assert main(["export-gates", str(out), "--out", str(tmp_path / "g.safetensors"), "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert main(["export-gates", str(out), "--out", str(tmp_path / "missing" / "g.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (out / "checkpoints" / "latest").write_bytes(b"\x00\xff")
    assert main(["export-gates", str(out), "--out", str(tmp_path / "g.safetensors")]) == 2
    assert "latest is malformed" in capsys.readouterr().err

    import foxacp.train.loop as loop

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(out))

    monkeypatch.setattr(loop, "train", denied)
    assert main(["train", "--out", str(tmp_path / "x"), *data_args]) == 2
    assert capsys.readouterr().err.strip() == f"foxacp: error: [Errno 13] Permission denied: '{out}'"
    monkeypatch.setattr(loop, "train", lambda *a, **k: {}["a bug"])
    with pytest.raises(KeyError):
        main(["train", "--out", str(tmp_path / "y"), *data_args])


def test_demo_replaces_its_own_previous_output(data_args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    demo = ["demo", *data_args[2:], f"corpus={data_args[1]}", "steps=2"]
    assert main(demo) == 0 and main(demo) == 0
    assert [r["step"] for r in read_log(tmp_path / "runs" / "demo") if r["kind"] == "train"] == [1, 2]
    other = tmp_path / "mine"
    assert main([*demo, "--out", str(other)]) == 0
    assert main([*demo, "--out", str(other)]) == 2  # a folder the user named is protected like train's
