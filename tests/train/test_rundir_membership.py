"""Run-directory safety at unit level (no training): membership of a resume, what overwrite deletes."""

from __future__ import annotations

import pytest

from foxacp.train.checkpoint import in_run
from foxacp.train.rundir import RunDirError, prepare_run_dir, remove_run_files


def _a_run(run):
    """A run directory that got as far as training: a log and a checkpoint."""
    (run / "checkpoints" / "step_000002").mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text("step_000002\n")
    (run / "log.jsonl").write_text('{"kind": "train", "step": 1}\n')
    return run


def test_a_sibling_run_whose_name_extends_this_ones_is_not_in_it(tmp_path):
    run, other = tmp_path / "run", tmp_path / "run2"
    _a_run(run)
    _a_run(other)
    assert in_run(run / "checkpoints" / "step_000002", run)
    assert not in_run(other / "checkpoints" / "step_000002", run)
    assert not in_run(other, run)
    # So resuming run2's checkpoint into run (which holds a run) is refused without --overwrite ...
    with pytest.raises(RunDirError, match="already holds a run"):
        prepare_run_dir(run, resume=other / "checkpoints" / "step_000002", overwrite=False)
    # ... and with --overwrite the old run is to be replaced (its files deleted), not mixed with the new one.
    assert prepare_run_dir(run, resume=other / "checkpoints" / "step_000002", overwrite=True) is True


def test_resume_with_overwrite_of_the_runs_own_checkpoint_deletes_nothing(tmp_path):
    """`--resume --overwrite` into the run the checkpoint belongs to asks to continue it and to replace it: refused,
    with nothing deleted."""
    run = _a_run(tmp_path / "run")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    for resume in (run, run / "checkpoints" / "step_000002"):
        with pytest.raises(RunDirError, match="pass one of them"):
            prepare_run_dir(run, resume=resume, overwrite=True)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_overwrite_removes_the_tensorboard_folder_and_dangling_links(tmp_path):
    run = _a_run(tmp_path / "run")
    (run / "tb").mkdir()
    (run / "tb" / "events.out.tfevents.1").write_bytes(b"old run")
    (run / "plot.png").symlink_to(tmp_path / "gone.png")  # dangling
    (run / "notes.txt").write_text("mine")
    remove_run_files(run)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_overwrite_unlinks_a_symlink_inside_a_symlinked_checkpoints_folder(tmp_path):
    disk = tmp_path / "disk"
    (disk / "step_000002").mkdir(parents=True)
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "model.safetensors").write_bytes(b"not the run's")
    (disk / "step_000001").symlink_to(keep, target_is_directory=True)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(disk, target_is_directory=True)
    remove_run_files(run)
    assert (run / "checkpoints").is_symlink() and list(disk.iterdir()) == []
    assert (keep / "model.safetensors").read_bytes() == b"not the run's"


def test_a_run_without_a_checkpoint_is_offered_overwrite_not_resume(tmp_path):
    """A run that stopped before its first checkpoint has nothing a resume could continue from."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "log.jsonl").write_text('{"kind": "train", "step": 1}\n')
    with pytest.raises(RunDirError, match="stopped before its first checkpoint") as refused:
        prepare_run_dir(run, resume=None, overwrite=False)
    assert "--resume" not in str(refused.value)
    (run / "checkpoints" / "step_000002").mkdir()  # a checkpoint, not yet pointed to
    with pytest.raises(RunDirError, match="pass --resume to continue it"):
        prepare_run_dir(run, resume=None, overwrite=False)
    (run / "checkpoints" / "step_000002").rmdir()
    (run / "checkpoints" / "latest").write_text("step_000002\n")  # the pointer alone
    with pytest.raises(RunDirError, match="pass --resume to continue it"):
        prepare_run_dir(run, resume=None, overwrite=False)
