"""activation_checkpointing="auto" with compiled blocks: the compiled block's count refines the eager upper bound
where that bound says the step would not fit (experiment 058: 76 GiB estimated for a 42-44 GiB compiled step)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from foxacp.model import FoxLM, ModelConfig
from foxacp.train import loop
from foxacp.train.loop import train
from foxacp.train.memory import MEMORY_FRACTION, StepMemory, checkpointing_wanted, describe, step_memory


def _model() -> FoxLM:
    torch.manual_seed(0)
    return FoxLM(ModelConfig(n_layers=2, d_model=128, n_heads=2, vocab_size=97, attn_backend="torch", acp=False))


def test_the_compiled_block_is_counted_below_the_eager_one():
    model = _model()
    eager = step_memory(model, 2, 256, autocast=contextlib.nullcontext())
    compiled = step_memory(model, 2, 256, autocast=contextlib.nullcontext(), compiled=True)
    assert compiled.compiled and not eager.compiled
    # Inductor recomputes the norms' and the SwiGLU's cheap intermediates: 7.9 MiB against 10.5 on this CPU build.
    assert 0.5 * eager.block < compiled.block < 0.95 * eager.block
    assert (compiled.state, compiled.head, compiled.block_input) == (eager.state, eager.head, eager.block_input)
    assert all(p.grad is None for p in model.parameters())


def test_a_block_that_does_not_compile_is_counted_eagerly(monkeypatch):
    model = _model()

    def broken(*args, **kwargs):
        raise RuntimeError("simulated: the backend failed")

    monkeypatch.setattr(torch, "compile", broken)
    mem = step_memory(model, 1, 64, autocast=contextlib.nullcontext(), compiled=True)
    assert not mem.compiled
    assert mem == step_memory(model, 1, 64, autocast=contextlib.nullcontext())


def _mem(block: int, compiled: bool) -> StepMemory:
    return StepMemory(state=100, block=block, block_input=1, head=0, head_temp=0, n_layers=8, compiled=compiled)


def test_the_compiled_count_decides_only_where_the_eager_bound_does_not_fit():
    eager, small = _mem(10, False), _mem(5, True)  # peaks 190 and 145 bytes without checkpointing
    calls = []

    def compiled() -> StepMemory:
        calls.append(1)
        return small

    fits_eager = int(190 / MEMORY_FRACTION) + 1
    assert checkpointing_wanted("auto", lambda: eager, fits_eager, compiled) == (False, eager)
    assert not calls  # the eager bound fits: no compilation for the estimate
    between = int(170 / MEMORY_FRACTION)
    assert checkpointing_wanted("auto", lambda: eager, between, compiled) == (False, small)
    assert checkpointing_wanted("auto", lambda: eager, int(140 / MEMORY_FRACTION), compiled) == (True, small)
    assert checkpointing_wanted("auto", lambda: eager, between, None) == (True, eager)  # eager blocks

    def out_of_memory() -> StepMemory:
        raise torch.OutOfMemoryError("simulated: CUDA out of memory")

    assert checkpointing_wanted("auto", lambda: eager, between, out_of_memory) == (True, None)


def test_compiling_out_of_memory_is_raised_not_counted_eagerly(monkeypatch):
    """A compiled measurement that runs out of memory propagates (``auto`` then turns checkpointing on), rather than
    falling back to the eager block as a failed compilation does."""

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("simulated: CUDA out of memory")

    monkeypatch.setattr(torch, "compile", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        step_memory(_model(), 1, 64, autocast=contextlib.nullcontext(), compiled=True)


def test_the_log_line_says_when_the_compiled_block_was_measured():
    capacity = 2**40
    assert describe(True, _mem(10, True), capacity).endswith("GiB; the compiled block measured)")
    assert "compiled" not in describe(True, _mem(10, False), capacity)


class Stop(Exception):
    pass


@pytest.mark.parametrize("compiled", [False, True])
def test_the_trainer_offers_the_compiled_measurement_only_for_compiled_blocks(
    small_config, tmp_path, monkeypatch, compiled
):
    offered, measured = [], []

    def wanted(setting, measure, capacity, measure_compiled=None):
        offered.append(measure_compiled)
        raise Stop  # the decision is all this test needs: no training

    monkeypatch.setattr(loop, "compile_wanted", lambda setting, device: compiled)
    monkeypatch.setattr(loop, "checkpointing_wanted", wanted)
    monkeypatch.setattr(loop, "step_memory", lambda *args, **kwargs: measured.append(kwargs.get("compiled", False)))
    with pytest.raises(Stop):
        train(small_config("steps=1", out=tmp_path / "run"))
    assert (offered[0] is not None) == compiled
    if compiled:
        offered[0]()
        assert measured == [True]
