"""A run the configuration alone refuses (cuda_graphs=true without CUDA, a corpus path that does not exist) is
refused before the run directory is claimed: no folder made, and an existing one left as it was (no checkpoints/,
no lock file)."""

from __future__ import annotations

import pytest
import torch

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


@pytest.mark.parametrize(
    "settings,refused",
    [
        (["compile=auto", "activation_checkpointing=auto"], None),  # auto checkpointing is decided later
        (["compile=true", "activation_checkpointing=false"], None),
        (["compile=false"], "the blocks are not compiled"),
        (["activation_checkpointing=true"], "activation checkpointing is on"),
    ],
)
def test_on_cuda_the_early_check_refuses_only_what_setup_would(small_config, tmp_path, settings, refused):
    # The check before the claim must not refuse cuda_graphs=true where _setup would run it (auto compile and
    # checkpointing on one GPU); a CUDA Dist is enough, as nothing runs on it before the claim.
    from foxacp.train.distributed import Dist
    from foxacp.train.loop import _claim_run_dir

    cfg = small_config("cuda_graphs=true", *settings, out=tmp_path / "run")
    d = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cuda", 0), distributed=False)
    if refused is not None:
        with pytest.raises(ValueError, match=refused):
            _claim_run_dir(cfg, None, False, d)
        assert not (tmp_path / "run").exists()
    else:
        _claim_run_dir(cfg, None, False, d)[0].release()
