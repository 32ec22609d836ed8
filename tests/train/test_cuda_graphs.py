"""cuda_graphs: when the trainer replays its compiled blocks as CUDA graphs, and that its loop then keeps every
gradient in tensors of its own and marks each micro-batch as a new graph step (the GPU run is
experiments/068-train-host-cost)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from foxacp.model import FoxLM, ModelConfig
from foxacp.train import distributed, loop, memory
from foxacp.train.config import ConfigError
from foxacp.train.distributed import GRAPH_MEMORY_MARGIN, Dist, graphs_wanted, parallelize, prepare_graph_grads
from foxacp.train.loop import train
from foxacp.train.memory import MEMORY_FRACTION
from foxacp.train.metrics import read_log

from .test_train_loop import train_losses

CUDA = torch.device("cuda")
ALONE = dict(compiled=True, distributed=False, checkpointing=False)


def test_auto_takes_graphs_only_where_they_can_run():
    assert graphs_wanted("auto", CUDA, **ALONE)
    assert not graphs_wanted("auto", torch.device("cpu"), **ALONE)
    for blocker in ("compiled", "distributed", "checkpointing"):
        flags = ALONE | {blocker: not ALONE[blocker]}
        assert not graphs_wanted("auto", CUDA, **flags)
        assert not graphs_wanted(False, CUDA, **flags)
    assert not graphs_wanted(False, CUDA, **ALONE)


def test_auto_leaves_room_for_the_graphs_memory():
    capacity = 80 * 2**30
    fits = int(MEMORY_FRACTION * capacity / GRAPH_MEMORY_MARGIN)
    assert graphs_wanted("auto", CUDA, **ALONE, peak_bytes=fits, capacity=capacity)
    assert not graphs_wanted("auto", CUDA, **ALONE, peak_bytes=fits + 2**20, capacity=capacity)
    assert graphs_wanted(True, CUDA, **ALONE, peak_bytes=fits + 2**20, capacity=capacity)  # asked for: taken


@pytest.mark.parametrize(
    "flags, why",
    [
        (ALONE | {"compiled": False}, "not compiled"),
        (ALONE | {"distributed": True}, "distributed"),
        (ALONE | {"checkpointing": True}, "checkpointing is on"),
    ],
)
def test_true_where_graphs_cannot_run_says_why(flags, why):
    with pytest.raises(ValueError, match=why):
        graphs_wanted(True, CUDA, **flags)
    with pytest.raises(ValueError, match="device is cpu"):
        graphs_wanted(True, torch.device("cpu"), **ALONE)
    with pytest.raises(ValueError, match="true, false or auto"):
        graphs_wanted("yes", CUDA, **ALONE)


def test_prepare_graph_grads_gives_trainable_parameters_zero_gradients():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    net[1].bias.requires_grad_(False)
    prepare_graph_grads(net)
    for name, p in net.named_parameters():
        if name == "1.bias":
            assert p.grad is None
        else:
            assert p.grad is not None and p.grad.shape == p.shape and not p.grad.any()


def test_config_refuses_other_settings(small_config):
    with pytest.raises(ConfigError, match="cuda_graphs"):
        small_config("cuda_graphs=sometimes")


def test_true_on_the_cpu_is_refused_before_training(small_config, tmp_path):
    with pytest.raises(ValueError, match="cuda_graphs=true cannot run here"):
        train(small_config("cuda_graphs=true", out=tmp_path / "run"))


def test_graph_loop_marks_each_micro_batch_and_trains_the_same(small_config, tmp_path, monkeypatch):
    # On the CPU the blocks stay eager; what is checked is the loop around graphs: gradients accumulated into
    # tensors made beforehand (never None between steps), a graph step marked per micro-batch, the same losses.
    train(plain := small_config("steps=3", "ckpt_every=2", out=tmp_path / "plain"))
    marks, seen = [], {}
    real_parallelize = loop.parallelize

    def parallelize(model, d, **kwargs):
        seen["cuda_graphs"] = kwargs.pop("cuda_graphs")
        seen["model"] = model
        return real_parallelize(model, d, **kwargs)

    monkeypatch.setattr(loop, "graphs_wanted", lambda *a, **k: True)
    monkeypatch.setattr(loop, "parallelize", parallelize)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    train(graphed := small_config("steps=3", "ckpt_every=2", out=tmp_path / "graphed"))
    assert seen["cuda_graphs"] is True
    assert len(marks) == 3 * 2  # steps x micro-batches
    assert all(p.grad is not None for p in seen["model"].parameters() if p.requires_grad)
    start = next(r for r in read_log(graphed.run_dir) if r["kind"] == "start")
    assert start["cuda_graphs"] is True
    assert train_losses(graphed.run_dir) == pytest.approx(train_losses(plain.run_dir), rel=1e-6)
    # A resume loads the optimizer's state first (into a fresh optimizer, which wants gradients None), then
    # makes the gradients: with them made before, loading failed on the GPU.
    resumed = dataclasses.replace(graphed, out=str(tmp_path / "resumed"))
    train(resumed, resume=graphed.run_dir / "checkpoints" / "step_000002")
    assert train_losses(resumed.run_dir) == pytest.approx({3: train_losses(plain.run_dir)[3]}, rel=1e-6)


def test_graphs_that_fail_while_recording_fall_back_to_compiled_blocks(small_config, tmp_path, monkeypatch, capsys):
    # Graphs are recorded on a block's second call: a failure in the second step falls back too, to plain
    # compiled blocks (not to eager), and the step is run again from zero gradients.
    train(plain := small_config("steps=3", out=tmp_path / "plain"))
    recompiled, calls = [], {"n": 0}
    real = loop._forward_backward

    def flaky(s, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            assert s.graphs and s.step == 1
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        return real(s, *args)

    monkeypatch.setattr(loop, "graphs_wanted", lambda *a, **k: True)
    monkeypatch.setattr(loop, "parallelize", lambda model, d, **kw: None)
    monkeypatch.setattr(loop, "compile_block", lambda block, *a: recompiled.append(block))
    monkeypatch.setattr(loop, "_forward_backward", flaky)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    train(graphed := small_config("steps=3", out=tmp_path / "graphed"))
    assert "CUDA graphs failed at step 2 (RuntimeError: CUDA error: operation not permitted" in capsys.readouterr().out
    fallback = [r for r in read_log(graphed.run_dir) if r["kind"] == "graphs_fallback"]
    assert [r["step"] for r in fallback] == [1] and "stream is capturing" in fallback[0]["error"]
    assert len(recompiled) == 2  # both blocks compiled again, without graphs
    assert train_losses(graphed.run_dir) == pytest.approx(train_losses(plain.run_dir), rel=1e-6)


def test_a_failure_after_the_recording_steps_is_raised(small_config, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = loop._forward_backward

    def flaky(s, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("a failure in the third step")
        return real(s, *args)

    monkeypatch.setattr(loop, "graphs_wanted", lambda *a, **k: True)
    monkeypatch.setattr(loop, "parallelize", lambda model, d, **kw: None)
    monkeypatch.setattr(loop, "_forward_backward", flaky)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    with pytest.raises(RuntimeError, match="third step"):
        train(small_config("steps=3", out=tmp_path / "graphed"))


def test_out_of_memory_while_graphed_drops_the_graphs_first(small_config, tmp_path, monkeypatch, capsys):
    # The graphs' pool may be what did not fit: without them the step is tried again even with checkpointing
    # set to false (before, that run died), and "auto" checkpointing is not turned on for it.
    calls = {"n": 0}
    real = loop._forward_backward

    def flaky(s, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(s, *args)

    monkeypatch.setattr(loop, "graphs_wanted", lambda *a, **k: True)
    monkeypatch.setattr(loop, "parallelize", lambda model, d, **kw: None)
    monkeypatch.setattr(loop, "compile_block", lambda block, *a: None)
    monkeypatch.setattr(loop, "_forward_backward", flaky)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    train(cfg := small_config("steps=3", "activation_checkpointing=false", out=tmp_path / "graphed"))
    assert "CUDA graphs failed at step 2 (OutOfMemoryError" in capsys.readouterr().out
    kinds = [r["kind"] for r in read_log(cfg.run_dir)]
    assert "graphs_fallback" in kinds and "checkpointing_fallback" not in kinds
    assert len(train_losses(cfg.run_dir)) == 3


# D1 (``<=`` -> ``<`` in graphs_wanted): a peak exactly at the bound is taken. Exact in floating point by
# choosing a margin and fraction that are powers of two.
def test_auto_takes_a_peak_exactly_at_the_bound(monkeypatch):
    monkeypatch.setattr(distributed, "GRAPH_MEMORY_MARGIN", 2.0)
    monkeypatch.setattr(memory, "MEMORY_FRACTION", 0.5)
    capacity = 64 * 2**30
    assert graphs_wanted("auto", CUDA, **ALONE, peak_bytes=capacity // 4, capacity=capacity)
    assert not graphs_wanted("auto", CUDA, **ALONE, peak_bytes=capacity // 4 + 1, capacity=capacity)


# D4 (compile_block ignores cuda_graphs) and D5 (parallelize does not pass cuda_graphs on): the mode reaches
# nn.Module.compile. Nothing is compiled: Module.compile is replaced by a recorder.
@pytest.mark.parametrize("graphs, mode", [(True, "reduce-overhead"), (False, None)])
def test_parallelize_compiles_graph_blocks_in_reduce_overhead_mode(monkeypatch, graphs, mode):
    modes = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **kw: modes.append(kw.get("mode")))
    model = FoxLM(ModelConfig(vocab_size=40, n_layers=3, d_model=32, n_heads=2, attn_backend="torch"))
    d = Dist(0, 1, 0, torch.device("cpu"), distributed=False)
    parallelize(model, d, activation_checkpointing=False, compile=True, param_dtype=None, cuda_graphs=graphs)
    assert modes == [mode] * 3


# C1 (the RULES entry for cuda_graphs dropped): parse_overrides refuses "sometimes" while coercing the text, so the
# existing test passes without the rule; a config built in code (or loaded from a run's saved config) is only
# checked by RULES in __post_init__.
def test_config_objects_refuse_other_cuda_graphs_settings(small_config):
    with pytest.raises(ConfigError, match="cuda_graphs"):
        dataclasses.replace(small_config(), cuda_graphs="sometimes")
