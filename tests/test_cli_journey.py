"""The command line as a first-time user meets it (a review of 2026-12-05): export-hf never writes over a run or a
checkpoint, --resume and --overwrite together are refused, a run without a checkpoint is not offered a resume, a
refused resume names the setting that changed, plot prints the file it wrote, a refused eval leaves no folder,
generate of an export-hf folder says what it is, and the resume of a finished run says how to go on."""

from __future__ import annotations

import json
import shutil

import pytest

from foxacp.cli import main
from foxacp.train.config import TrainConfig
from tests.test_cli_edges import _train
from tests.train.conftest import SMALL, cache_dir, corpus_dir, one_thread  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def trained(corpus_dir, cache_dir, tmp_path_factory):  # noqa: F811
    """One trained tiny run (byte tokenizer, 1 step), kept pristine: tests that write near it use a copy."""
    out = tmp_path_factory.mktemp("review") / "run"
    _train(out, corpus_dir, cache_dir)
    return out


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


# ---- export-hf ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("into", ["run", "checkpoint"])
def test_export_hf_refuses_to_write_into_the_run_it_exports(run, capsys, into):
    """export-hf into the run it exports (or one of its checkpoints), even with --overwrite, is refused: it
    would replace the run's config.json or the checkpoint's weights."""
    target = run if into == "run" else run / "checkpoints" / "step_000001"
    rc = main(["export-hf", str(run), str(target), "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2 and "foxacp: error:" in err
    TrainConfig.load(run / "config.json")  # still the run's training config
    assert main(["generate", str(run), "--prompt", "def ", "--max-new-tokens", "2", "--seed", "0"]) == 0


# ---- train ---------------------------------------------------------------------------------------------------


def test_train_refuses_resume_together_with_overwrite(run, capsys):
    """--resume (continue the run) and --overwrite (replace it) together: one-line error, status 2, nothing
    written."""
    before = (run / "log.jsonl").read_text()
    rc = main(["train", "--resume", "--overwrite", "--out", str(run), "--steps", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "--overwrite" in err and "--resume" in err
    assert (run / "log.jsonl").read_text() == before


def test_refusal_of_a_run_without_a_checkpoint_does_not_advise_resume(corpus_dir, cache_dir, tmp_path, capsys):  # noqa: F811
    """A run killed in its first step (log.jsonl with a start record, no checkpoint): the refusal does not
    advise a --resume that could not work."""
    out = tmp_path / "killed"
    (out / "checkpoints").mkdir(parents=True)
    start = {"time": 0.0, "kind": "start", "step": 0, "n_params": 1, "world_size": 1, "device": "cpu"}
    (out / "log.jsonl").write_text(json.dumps(start) + "\n")
    args = ["train", "--out", str(out), "--data", str(corpus_dir), "--set", *SMALL, f"cache_dir={cache_dir}"]
    rc = main([*args, "steps=1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--resume" not in err or "no checkpoint" in err


@pytest.mark.parametrize(
    ("change", "named"),
    [(["--set", "seq_len=64"], "seq_len"), (["--data", "stdlib"], "corpus")],
)
def test_a_refused_resume_names_the_setting_that_changed(run, capsys, change, named):
    """A resume refused for another data stream names the settings changed since the checkpoint (seq_len,
    corpus), not only the loader's state."""
    rc = main(["train", "--resume", "--out", str(run), "--steps", "2", *change])
    err = capsys.readouterr().err
    assert rc == 2
    assert named in err, err
    changed = err.split("changed since it: ", 1)[1].split(")", 1)[0].split(", ")
    assert named in changed and "steps" not in changed, err  # --steps is how a resume goes on, not a change


# ---- plot ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["myplot", "figs"])
def test_plot_prints_the_path_it_wrote(trained, tmp_path, capsys, name):
    """plot --out without a suffix (or an existing folder) prints the file it wrote."""
    (tmp_path / "figs").mkdir()
    target = tmp_path / name
    assert main(["plot", str(trained), "--out", str(target)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    from pathlib import Path

    assert Path(printed).is_file(), f"printed {printed!r}, folder holds {sorted(p.name for p in tmp_path.iterdir())}"


# ---- eval / train: refused arguments leave nothing behind ---------------------------------------------------


def test_a_refused_eval_creates_no_output_folder(trained, corpus_dir, tmp_path, capsys):  # noqa: F811
    """A refused eval (bad depths, a run that does not exist) leaves no --out folder behind."""
    held = tmp_path / "held"
    held.mkdir()
    for p in sorted(corpus_dir.glob("*.py"))[:1]:
        shutil.copy(p, held / p.name)
    out = tmp_path / "ev"
    assert main(["eval", str(trained), "--data", str(held), "--out", str(out), "--depths", "1.5"]) == 2
    assert not out.exists()
    out2 = tmp_path / "ev2"
    assert main(["eval", str(tmp_path / "no_such_run"), "--data", str(held), "--out", str(out2)]) == 2
    assert not out2.exists()


# ---- generate / eval of an export-hf folder ------------------------------------------------------------------


def test_generate_of_an_export_hf_folder_is_not_called_an_incomplete_checkpoint(trained, tmp_path, capsys):
    """generate of an export-hf folder is not called a damaged checkpoint."""
    hf = tmp_path / "hf"
    assert main(["export-hf", str(trained), str(hf)]) == 0
    capsys.readouterr()
    rc = main(["generate", str(hf), "--prompt", "def ", "--max-new-tokens", "2"])
    err = capsys.readouterr().err
    assert rc == 0 or "incomplete checkpoint" not in err, err


def test_resume_of_a_finished_run_says_it_is_finished(run, capsys):
    """The resume of a run already at its last step says so and how to go on (--steps)."""
    rc = main(["train", "--resume", "--out", str(run)])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert rc == 2 or "--steps" in text, text
