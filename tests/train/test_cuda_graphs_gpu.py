"""The trainer with its compiled blocks as CUDA graphs on a GPU: the same losses as compiled blocks without them,
through evaluation, a checkpoint and a resume, and ACP's statistics logged alike.

    pytest -m gpu tests/train/test_cuda_graphs_gpu.py
"""

from __future__ import annotations

import dataclasses

import pytest

from foxacp.train.loop import train
from foxacp.train.metrics import read_log

pytestmark = pytest.mark.gpu

GPU = ("device=cuda", "compile=true", "model.attn_backend=triton", "model.acp=true", "eval_every=4", "ckpt_every=4")


def _records(run_dir, kind):
    return {r["step"]: r for r in read_log(run_dir) if r["kind"] == kind}


def test_graphs_train_evaluate_and_resume_as_compiled_blocks_do(small_config, tmp_path):
    plain = small_config(*GPU, "cuda_graphs=false", "log_every=1", out=tmp_path / "plain")
    graphed = small_config(*GPU, "cuda_graphs=auto", "log_every=1", out=tmp_path / "graphed")
    train(plain)
    train(graphed)
    assert _records(graphed.run_dir, "start")[0]["cuda_graphs"] is True
    assert _records(plain.run_dir, "start")[0]["cuda_graphs"] is False
    want, got = _records(plain.run_dir, "train"), _records(graphed.run_dir, "train")
    assert sorted(got) == sorted(want) == list(range(1, 9))
    for step in want:
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=1e-5), step
        assert got[step]["acp_saving"] == pytest.approx(want[step]["acp_saving"], abs=1e-6), step
    want_eval, got_eval = _records(plain.run_dir, "eval"), _records(graphed.run_dir, "eval")
    assert sorted(got_eval) == sorted(want_eval) and got_eval
    for step in want_eval:
        assert got_eval[step]["loss"] == pytest.approx(want_eval[step]["loss"], rel=1e-5), step
    resumed = dataclasses.replace(graphed, out=str(tmp_path / "resumed"))
    train(resumed, resume=graphed.run_dir / "checkpoints" / "step_000004")
    second = _records(resumed.run_dir, "train")
    assert sorted(second) == [5, 6, 7, 8]
    for step in second:
        assert second[step]["loss"] == pytest.approx(got[step]["loss"], rel=1e-5), step
