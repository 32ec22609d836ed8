"""A run the configuration alone refuses (cuda_graphs=true without CUDA, a corpus path that does not exist) is
refused before the run directory is claimed: no folder made, and an existing one left as it was (no checkpoints/,
no lock file)."""

from __future__ import annotations

import pytest

from foxacp.train.loop import train


def test_cuda_graphs_true_on_the_cpu_leaves_no_run_dir(small_config, tmp_path):
    with pytest.raises(ValueError, match="cuda_graphs=true cannot run here"):
        train(small_config("cuda_graphs=true", out=tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_cuda_graphs_true_on_the_cpu_leaves_an_existing_run_dir_as_it_was(small_config, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="cuda_graphs=true cannot run here"):
        train(small_config("cuda_graphs=true", out=run))
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_a_missing_corpus_path_leaves_no_run_dir(small_config, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        train(small_config(f"corpus={tmp_path / 'no-such-corpus'}", out=tmp_path / "run"))
    assert not (tmp_path / "run").exists()
