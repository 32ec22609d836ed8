"""activation_checkpointing="auto": the measured step memory and the decision taken on it."""

from __future__ import annotations

import contextlib

import pytest
import torch

from foxacp.eval import token_losses
from foxacp.model import FoxLM, ModelConfig
from foxacp.train import loop
from foxacp.train.loop import train
from foxacp.train.memory import MEMORY_FRACTION, StepMemory, checkpointing_wanted, saved_bytes, step_memory
from foxacp.train.metrics import read_log

from .test_train_loop import train_losses


def test_saved_bytes_counts_each_saved_storage_once_and_leaves_out_excluded_ones():
    x = torch.randn(100, requires_grad=True)
    w = torch.nn.Parameter(torch.randn(100, 7))

    def fn() -> torch.Tensor:
        a = x.exp()  # saves its result a (400 bytes)
        b = a * a  # saves a twice: the same storage
        return b @ w  # saves b (400 bytes) and w (excluded)

    assert saved_bytes(fn, {w.untyped_storage().data_ptr()}) == 800
    assert saved_bytes(fn) == 800 + 100 * 7 * 4


def _model(**kw) -> FoxLM:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=3, d_model=32, n_heads=2, vocab_size=97, attn_backend="torch", acp=False, **kw)
    return FoxLM(cfg)


@pytest.mark.parametrize("variant", ["fox_pro", "fox", "transformer"])
def test_step_memory_extrapolates_one_block_to_the_whole_model(variant):
    """The whole model's forward saves what n_layers probed blocks and the probed head save: the estimate's parts
    add up to the real model's."""
    model = _model(variant=variant)
    B, T = 2, 70
    mem = step_memory(model, B, T, autocast=contextlib.nullcontext())
    ids = torch.randint(0, 97, (B, T))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    whole = saved_bytes(lambda: token_losses(model, {"input_ids": ids, "labels": ids}), params)
    assert mem.block > mem.block_input > 0 and mem.head_temp > 0
    # The estimate counts each block's positions (B, T int64), which the blocks of the real model share, and
    # leaves out the token ids: it may exceed the real count by at most one int64 (B, T) tensor per block.
    over = mem.n_layers * mem.block + mem.head - whole
    assert 0 <= over <= mem.n_layers * ids.numel() * 8


def test_step_memory_grows_with_the_micro_batch_and_leaves_no_trace():
    model = _model()
    one = step_memory(model, 1, 64, autocast=contextlib.nullcontext())
    two = step_memory(model, 2, 64, autocast=contextlib.nullcontext())
    assert two.block == pytest.approx(2 * one.block, rel=0.02)
    assert two.block_input == 2 * one.block_input and two.state == one.state
    assert all(p.grad is None for p in model.parameters())  # the probe ran no backward
    sharded = step_memory(model, 1, 64, world_size=4, autocast=contextlib.nullcontext())
    assert sharded.state < one.state


def test_peak_with_checkpointing_keeps_only_block_inputs():
    mem = StepMemory(state=1000, block=50, block_input=5, head=30, head_temp=10, n_layers=24)
    assert mem.peak(False) == 1000 + 24 * 50 + 30 + 10 + 50
    assert mem.peak(True) == 1000 + 24 * 5 + 50 + 30 + 10 + 50
    assert mem.peak(True) < mem.peak(False)


def test_checkpointing_wanted_measures_only_for_auto_on_a_device_with_a_capacity():
    mem = StepMemory(state=100, block=10, block_input=1, head=0, head_temp=0, n_layers=8)  # 190 bytes without

    def never() -> StepMemory:
        raise AssertionError("measured")

    assert checkpointing_wanted(True, never, 10) == (True, None)
    assert checkpointing_wanted(False, never, 10) == (False, None)
    assert checkpointing_wanted("auto", never, None) == (False, None)  # the CPU
    assert checkpointing_wanted("auto", lambda: mem, int(190 / MEMORY_FRACTION) + 1) == (False, mem)
    assert checkpointing_wanted("auto", lambda: mem, int(190 / MEMORY_FRACTION) - 1) == (True, mem)
    with pytest.raises(ValueError, match="true, false or auto"):
        checkpointing_wanted("yes", never, 10)

    def out_of_memory() -> StepMemory:
        raise torch.OutOfMemoryError("simulated: CUDA out of memory")

    assert checkpointing_wanted("auto", out_of_memory, 10) == (True, None)


@pytest.mark.parametrize("capacity, on", [(1 << 20, True), (1 << 50, False)])
def test_auto_decides_from_the_device_capacity_and_trains_the_same(
    small_config, tmp_path, monkeypatch, capsys, capacity, on
):
    monkeypatch.setattr(loop, "device_capacity", lambda device: capacity)
    train(plain := small_config("steps=2", "activation_checkpointing=false", out=tmp_path / "plain"))
    assert "activation checkpointing" not in capsys.readouterr().out  # said only when "auto" decides
    train(auto := small_config("steps=2", out=tmp_path / "auto"))
    assert f"activation checkpointing {'on' if on else 'off'} (auto: a step needs" in capsys.readouterr().out
    assert auto.activation_checkpointing == "auto"
    start = next(r for r in read_log(auto.run_dir) if r["kind"] == "start")
    assert start["activation_checkpointing"] is on
    assert start["memory_estimate"]["n_layers"] == 2 and start["memory_estimate"]["block"] > 0
    assert train_losses(auto.run_dir) == train_losses(plain.run_dir)


def _oom_once(monkeypatch) -> list[int]:
    """Make the first block forward of the run raise CUDA's out-of-memory error once."""
    from foxacp.model.lm import Block

    calls, forward = [], Block.forward

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Block, "forward", failing)
    return calls


def test_out_of_memory_at_the_first_step_turns_checkpointing_on_when_auto_left_it_off(
    small_config, tmp_path, monkeypatch, capsys
):
    train(plain := small_config("steps=3", "activation_checkpointing=true", out=tmp_path / "plain"))
    _oom_once(monkeypatch)
    train(auto := small_config("steps=3", out=tmp_path / "auto"))  # auto on the CPU: off
    assert train_losses(auto.run_dir) == train_losses(plain.run_dir)
    records = [r for r in read_log(auto.run_dir) if r["kind"] == "checkpointing_fallback"]
    assert len(records) == 1 and records[0]["step"] == 0 and "simulated" in records[0]["error"]
    assert capsys.readouterr().out.count("training continues with activation checkpointing") == 1


@pytest.mark.parametrize("setting", ["true", "false"])
def test_out_of_memory_with_an_explicit_setting_is_raised(small_config, tmp_path, monkeypatch, setting):
    _oom_once(monkeypatch)
    with pytest.raises(torch.OutOfMemoryError, match="simulated"):
        train(small_config("steps=2", f"activation_checkpointing={setting}", out=tmp_path / setting))


@pytest.mark.gpu
@pytest.mark.parametrize("blocks", ["eager", "checkpointed", "compiled"])
def test_estimate_bounds_the_measured_peak_on_the_gpu(blocks):
    """On a GPU (bf16 autocast, the Triton kernels): the peak of a real training step lies below the estimate and
    above half of it, with and without checkpointing, and with blocks compiled as the trainer compiles them (their
    own estimate, below the eager one)."""
    from foxacp.train.distributed import checkpoint_blocks, compile_block

    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=4, d_model=256, n_heads=4, vocab_size=50304)
    model = FoxLM(cfg).cuda()
    B, T = 2, 2048
    autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    mem = step_memory(model, B, T, autocast=autocast, compiled=blocks == "compiled")
    if blocks == "compiled":
        assert mem.compiled and mem.block < step_memory(model, B, T, autocast=autocast).block
        for block in model.blocks:
            compile_block(block)
    if blocks == "checkpointed":
        checkpoint_blocks(model)
    opt = torch.optim.AdamW(model.parameters())
    ids = torch.randint(0, cfg.vocab_size, (B, T), device="cuda")

    def step() -> None:
        with autocast:
            loss = token_losses(model, {"input_ids": ids, "labels": ids}).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)

    step()  # the optimizer's moments and the gradients exist from here on, as in every later step
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    measured, estimate = torch.cuda.max_memory_allocated(), mem.peak(blocks == "checkpointed")
    assert 0.5 * estimate <= measured <= estimate, (measured / 2**20, estimate / 2**20)
