"""What eval, analyze, plot and export-gates promise about their outputs: a refused call leaves nothing, an
interrupted one leaves the previous output, the files are readable by their readers and name what they describe.
Each test failed before its fix (found by a user-journey review)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from foxacp.cli import main
from tests.eval.conftest import tiny_loader  # noqa: F401  (fixture)
from tests.test_cli_edges import _train
from tests.train.conftest import cache_dir, corpus_dir, one_thread  # noqa: F401  (fixtures)

EVAL = ["--max-len", "64", "--trials", "1", "--depths", "0", "--passkey-lengths", "200"]


@pytest.fixture(scope="module")
def trained(corpus_dir, cache_dir, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("contracts") / "run"
    _train(out, corpus_dir, cache_dir)
    return out


def test_eval_of_documents_without_two_tokens_is_refused_before_the_out_folder_is_made(tiny_loader, tmp_path):  # noqa: F811
    tiny_loader()
    data = tmp_path / "short.txt"
    data.write_text("a")  # one byte token: no position to score
    out = tmp_path / "ev"
    assert main(["eval", "run", "--data", str(data), "--out", str(out), *EVAL]) == 2
    assert not out.exists()


@pytest.mark.parametrize("log_eps", ["0", "1"])
def test_analyze_with_a_non_negative_log_eps_is_refused_before_the_out_folder_is_made(tiny_loader, tmp_path, log_eps):  # noqa: F811
    tiny_loader()
    data = tmp_path / "doc.txt"
    data.write_text("hello world " * 40)
    out = tmp_path / "an"
    assert main(["analyze", "run", "--data", str(data), "--out", str(out), "--log-eps", log_eps]) == 2
    assert not out.exists()


def test_compare_exact_is_refused_for_a_model_without_acp(tiny_loader, tmp_path, capsys):  # noqa: F811
    tiny_loader(acp=False)  # both sides would run exactly, and the record would read "ACP changed nothing"
    data = tmp_path / "doc.txt"
    data.write_text("hello world " * 40)
    out = tmp_path / "ev"
    assert main(["eval", "run", "--data", str(data), "--out", str(out), *EVAL, "--compare-exact"]) == 2
    assert "no ACP run to compare" in capsys.readouterr().err and not out.exists()


def test_eval_records_the_data_path_it_read(tiny_loader, tmp_path, monkeypatch):  # noqa: F811
    from foxacp.eval.report import run_eval

    tiny_loader()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "held.txt").write_text("hello world " * 40)
    rec = run_eval("run", "~/held.txt", tmp_path / "ev", max_len=64, passkey_lengths=[200], depths=[0.5],
                   trials=1, progress=False)  # fmt: skip
    assert rec["meta"]["data"] == str(tmp_path / "held.txt")  # not <cwd>/~/held.txt
    assert rec["meta"]["checkpoint"] is None  # no run there: the loader was replaced


def test_eval_names_the_checkpoint_it_evaluated(trained, tmp_path):
    from foxacp.eval.report import run_eval
    from foxacp.train.checkpoint import resolve_checkpoint

    data = tmp_path / "doc.txt"
    data.write_text("def f(x):\n    return x + 1\n" * 20)
    rec = run_eval(trained, data, tmp_path / "ev", max_len=64, passkey_lengths=[200], depths=[0.5], trials=1,
                   progress=False)  # fmt: skip
    # The run's ``latest`` moves as it trains: the record names the step it read.
    assert rec["meta"]["checkpoint"] == str(resolve_checkpoint(trained).resolve())
    assert Path(rec["meta"]["checkpoint"]).name.startswith("step_")


@pytest.mark.parametrize("name", ["gates.pt", "gates", "gates.safetensors.tmp"])
def test_export_gates_refuses_a_name_its_readers_would_not_load_as_safetensors(trained, tmp_path, capsys, name):
    out = tmp_path / name
    assert main(["export-gates", str(trained), "--out", str(out), "--seq-len", "64"]) == 2
    assert ".safetensors" in capsys.readouterr().err and not out.exists()


def test_export_gates_into_a_folder_names_the_folder(trained, tmp_path, capsys):
    folder = tmp_path / "gates.safetensors"
    folder.mkdir()
    assert main(["export-gates", str(trained), "--out", str(folder), "--seq-len", "64"]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and ".tmp-" not in err


def test_export_gates_writes_what_the_benchmarks_load(trained, tmp_path):
    from foxacp.bench.gates import load_log_fgate_layers

    out = tmp_path / "gates.safetensors"
    assert main(["export-gates", str(trained), "--out", str(out), "--seq-len", "64"]) == 0
    assert load_log_fgate_layers(out).shape[2] == 64


def test_an_interrupted_plot_keeps_the_previous_plot(trained, tmp_path, monkeypatch):
    import matplotlib.figure

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    good = (run / "plot.png").read_bytes()
    real = matplotlib.figure.Figure.savefig

    def cut(self, fname, *a, **k):  # the figure is written, the target torn where it is a file, then Ctrl-C
        real(self, fname, *a, **k)
        if isinstance(fname, (str, Path)):
            Path(fname).write_bytes(Path(fname).read_bytes()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", cut)
    assert main(["plot", str(run)]) == 130
    assert (run / "plot.png").read_bytes() == good
    monkeypatch.undo()
    assert main(["plot", str(run)]) == 0 and (run / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run.glob(".*tmp*"))  # no temporary left beside it
