"""The training loop around CUDA graphs, on the CPU with graphs faked on (blocks eager): marks before each
forward, gradients made after a resume, a plain loop after a fallback, no second-step fallback without graphs.
Each test kills a mutant the first tests missed (a mutation run of the change)."""

from __future__ import annotations

import pytest
import torch

from foxacp.train import loop
from foxacp.train.metrics import read_log


def _graphs_on_cpu(monkeypatch, events):
    """The trainer believes in CUDA graphs on the CPU: blocks stay eager, marks and forwards are recorded."""
    real_parallelize, real_losses = loop.parallelize, loop.token_losses
    monkeypatch.setattr(loop, "graphs_wanted", lambda *a, **k: True)
    monkeypatch.setattr(
        loop, "parallelize", lambda model, d, **kw: real_parallelize(model, d, **kw | {"cuda_graphs": False})
    )
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: events.append("mark"))

    def token_losses(model, mb):
        events.append("forward")
        return real_losses(model, mb)

    monkeypatch.setattr(loop, "token_losses", token_losses)


# L6 (mark_step_begin after the forward instead of before it): each micro-batch's forward follows a mark.
def test_each_graph_forward_follows_a_new_graph_step(small_config, tmp_path, monkeypatch):
    events = []
    _graphs_on_cpu(monkeypatch, events)
    loop.train(small_config("steps=2", "eval_every=0", out=tmp_path / "run"))
    train_events = events[: 2 * 2 * 2]  # 2 steps x 2 micro-batches (evaluation, if any, comes later)
    assert train_events == ["mark", "forward"] * 4


# L1 (no prepare_graph_grads in _setup) and L2 (prepare_graph_grads before _resume): the gradients exist before
# the first forward of a fresh and of a resumed run, and a resume loads the optimizer while they are still None.
def test_graph_gradients_are_made_after_the_resume_and_before_the_first_step(small_config, tmp_path, monkeypatch):
    events, at_first_forward, at_resume = [], [], []
    _graphs_on_cpu(monkeypatch, events)
    real_fb, real_resume = loop._forward_backward, loop._resume

    def fb(s, *args):
        at_first_forward.append(all(p.grad is not None for p in s.model.parameters() if p.requires_grad))
        return real_fb(s, *args)

    def resume(s, path):
        at_resume.append(all(p.grad is None for p in s.model.parameters()))
        return real_resume(s, path)

    monkeypatch.setattr(loop, "_forward_backward", fb)
    monkeypatch.setattr(loop, "_resume", resume)
    loop.train(first := small_config("steps=2", "ckpt_every=1", out=tmp_path / "first"))
    loop.train(small_config("steps=3", out=tmp_path / "resumed"), resume=first.run_dir / "checkpoints" / "step_000001")
    assert at_first_forward and all(at_first_forward)
    assert at_resume == [True]


def _flaky_second_step(monkeypatch, error):
    calls, real = {"n": 0}, loop._forward_backward

    def flaky(s, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise error
        return real(s, *args)

    monkeypatch.setattr(loop, "_forward_backward", flaky)


# L12 (_ungraph leaves s.graphs True): after a graphs fallback no graph step is marked any more and the gradients
# are zeroed to None again (the plain compiled blocks' way).
def test_after_a_graphs_fallback_the_loop_is_plain_again(small_config, tmp_path, monkeypatch):
    marks = []
    monkeypatch.setattr(loop, "graphs_wanted", lambda *a, **k: True)
    monkeypatch.setattr(loop, "parallelize", lambda model, d, **kw: None)
    monkeypatch.setattr(loop, "compile_block", lambda block, *a: None)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    _flaky_second_step(monkeypatch, RuntimeError("stream is capturing"))
    loop.train(cfg := small_config("steps=3", out=tmp_path / "run"))
    assert len(marks) == 2  # the first step's two micro-batches only
    assert len([r for r in read_log(cfg.run_dir) if r["kind"] == "graphs_fallback"]) == 1


# L8 (``early`` without ``s.graphs and``): without graphs only the first step falls back; an out-of-memory error
# in the second step is raised even where "auto" left checkpointing off.
def test_without_graphs_a_second_step_out_of_memory_is_raised(small_config, tmp_path, monkeypatch):
    _flaky_second_step(monkeypatch, torch.OutOfMemoryError("simulated: CUDA out of memory"))
    with pytest.raises(torch.OutOfMemoryError, match="simulated"):
        loop.train(small_config("steps=3", out=tmp_path / "run"))


# A compilation that fails when the second step is tried again after its graphs fell back: the message names that
# step (it said "at the first step").
def test_a_compile_failure_after_a_second_step_graphs_fallback_names_its_step(
    small_config, tmp_path, monkeypatch, capsys
):
    calls, real = {"n": 0}, loop._forward_backward

    def flaky(s, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("stream is capturing")
        if calls["n"] == 3:
            assert s.compiled and not s.graphs and s.step == 1
            raise RuntimeError("simulated compiler failure")
        return real(s, *args)

    monkeypatch.setattr(loop, "graphs_wanted", lambda *a, **k: True)
    monkeypatch.setattr(loop, "parallelize", lambda model, d, **kw: None)
    monkeypatch.setattr(loop, "compile_block", lambda block, *a: None)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    monkeypatch.setattr(loop, "_forward_backward", flaky)
    loop.train(cfg := small_config("steps=3", "compile=true", out=tmp_path / "run"))
    out = capsys.readouterr().out
    assert "torch.compile failed at step 2 (RuntimeError: simulated compiler failure)" in out
    assert "first step" not in out
    assert [r["step"] for r in read_log(cfg.run_dir) if r["kind"] == "compile_fallback"] == [1]
