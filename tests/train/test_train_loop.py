"""The training loop on CPU with a 2-layer FoX Pro: learning, exact resume, accumulation, packing."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

import foxacp
from foxacp.io import REPO, git_commit
from foxacp.train.loop import split_batch, train
from foxacp.train.metrics import read_log


def train_losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_log(run_dir) if r["kind"] == "train"}


def test_tiny_model_learns_and_logs(small_config, tmp_path):
    cfg = small_config("steps=30", "log_every=5", "eval_every=15")
    summary = train(cfg)
    records = read_log(cfg.run_dir)
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 1.0, losses  # from ~ln(320) = 5.8 to well below
    assert summary["final_loss"] == losses[-1] and summary["steps"] == 30
    rec = [r for r in records if r["kind"] == "train"][-1]
    assert rec["mfu"] is None  # CPU: no peak FLOP/s
    assert len(rec["acp_layer"]) == 2 and len(rec["acp_head"]) == 2 and len(rec["acp_head"][0]) == 2
    assert 0.0 <= rec["acp_saving"] <= 1.0 and rec["grad_norm"] > 0 and rec["tokens_per_s"] > 0
    evals = [r for r in records if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == [15, 30] and evals[1]["loss"] < evals[0]["loss"]
    assert len(evals[0]["position_loss"]) == 32 and evals[0]["bucket_size"] == 4  # 128 tokens
    assert (cfg.run_dir / "checkpoints" / "step_000030" / "model.safetensors").exists()
    assert json.loads((cfg.run_dir / "config.json").read_text())["steps"] == 30
    start = records[0]
    assert start["kind"] == "start" and start["commit"] == git_commit(REPO)  # the code that trained it


def test_resume_matches_uninterrupted_run_step_for_step(small_config, tmp_path):
    straight = small_config("ckpt_every=4", out=tmp_path / "straight")
    train(straight)
    full = train_losses(straight.run_dir)
    assert sorted(full) == list(range(1, 9))
    resumed = dataclasses.replace(straight, out=str(tmp_path / "resumed"))
    train(resumed, resume=straight.run_dir / "checkpoints" / "step_000004")
    second = train_losses(resumed.run_dir)
    assert sorted(second) == [5, 6, 7, 8]
    for step in second:
        assert second[step] == full[step], (step, second[step], full[step])


def test_gradient_accumulation_matches_one_big_micro_batch(small_config, tmp_path):
    train(accum := small_config("steps=3", out=tmp_path / "a"))  # 2 micro-batches of 4 rows
    train(big := small_config("steps=3", "micro_batch_size=8", out=tmp_path / "b"))
    a, b = train_losses(accum.run_dir), train_losses(big.run_dir)
    assert a.keys() == b.keys()
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5)


def test_packed_batches_train(small_config):
    cfg = small_config("pack=true", "steps=2", "eval_every=2")
    summary = train(cfg)
    assert summary["final_loss"] is not None and summary["eval_loss"] is not None


def test_split_batch_rebases_cu_seqlens():
    batch = {
        "input_ids": torch.arange(16).view(4, 4),
        "labels": torch.arange(16).view(4, 4),
        "cu_seqlens": torch.tensor([0, 3, 4, 8, 10, 12, 16], dtype=torch.int32),
        "max_seqlen": 4,
    }
    first, second = split_batch(batch, 2)
    assert torch.equal(first["input_ids"], batch["input_ids"][:2])
    assert first["cu_seqlens"].tolist() == [0, 3, 4, 8] and first["max_seqlen"] == 4
    assert second["cu_seqlens"].tolist() == [0, 2, 4, 8] and second["max_seqlen"] == 4
    assert second["cu_seqlens"].dtype == torch.int32
    with pytest.raises(ValueError, match="do not split"):
        split_batch(batch, 3)


def test_activation_checkpointing_changes_nothing_but_memory(small_config, tmp_path):
    plain = small_config("steps=2", out=tmp_path / "plain")
    ac = small_config("steps=2", "activation_checkpointing=true", out=tmp_path / "ac")
    train(plain)
    train(ac)
    assert train_losses(ac.run_dir) == train_losses(plain.run_dir)
    model = foxacp.load(ac.run_dir)  # state-dict keys carry no wrapper prefix
    reference = foxacp.load(plain.run_dir)
    for (name, a), b in zip(reference.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_grad_clip_zero_turns_clipping_off(small_config, tmp_path):
    off = small_config("steps=3", "grad_clip=0", out=tmp_path / "off")
    huge = small_config("steps=3", "grad_clip=1e30", out=tmp_path / "huge")
    clipped = small_config("steps=3", "grad_clip=0.01", out=tmp_path / "clipped")
    for cfg in (off, huge, clipped):
        train(cfg)
    assert train_losses(off.run_dir) == train_losses(huge.run_dir)
    assert train_losses(off.run_dir)[3] != train_losses(clipped.run_dir)[3]


def test_resume_logs_changed_settings_and_refuses_another_preset(small_config, tmp_path):
    from foxacp.train.config import ConfigError

    cfg = small_config("steps=2")
    train(cfg)
    more = dataclasses.replace(cfg, steps=3, eval_every=3)
    train(more, resume=cfg.run_dir)
    start = [r for r in read_log(cfg.run_dir) if r["kind"] == "start"][-1]
    assert start["resume_changes"] == {"steps": [2, 3], "eval_every": [0, 3]}
    config = (cfg.run_dir / "config.json").read_text()
    with pytest.raises(ConfigError, match="keeps its preset"):
        train(dataclasses.replace(more, preset="125M", steps=4), resume=cfg.run_dir)
    assert (cfg.run_dir / "config.json").read_text() == config


def test_failed_compilation_falls_back_to_eager_with_one_message(small_config, tmp_path, monkeypatch, capsys):
    """A compiler that fails at the first step (simulated by a backend that raises): the run says so once, logs
    it, and trains exactly as an eager run does."""
    from foxacp.train import distributed

    def failing_backend(gm, example_inputs):
        raise RuntimeError("simulated compiler failure")

    monkeypatch.setattr(distributed, "compile_block", lambda block, *_: block.compile(backend=failing_backend))
    train(eager := small_config("steps=3", "compile=false", out=tmp_path / "eager"))
    train(fallback := small_config("steps=3", "compile=true", out=tmp_path / "fallback"))
    assert train_losses(fallback.run_dir) == train_losses(eager.run_dir)
    records = [r for r in read_log(fallback.run_dir) if r["kind"] == "compile_fallback"]
    assert len(records) == 1 and records[0]["step"] == 0 and "simulated compiler failure" in records[0]["error"]
    assert capsys.readouterr().out.count("torch.compile failed at step 1 (") == 1
    assert not any(r["kind"] == "compile_fallback" for r in read_log(eager.run_dir))


def test_passkey_fraction_mixes_passkey_rows_into_training(small_config, monkeypatch):
    import foxacp.train.loop as loop

    drawn = []

    class Counting(loop.PasskeyMixer):
        def __next__(self):
            drawn.append(self.fraction)
            return super().__next__()

    monkeypatch.setattr(loop, "PasskeyMixer", Counting)
    cfg = small_config(
        "passkey_fraction=0.25", "seq_len=512", "global_batch_tokens=2048", "micro_batch_size=2", "steps=2"
    )
    summary = train(cfg)
    assert summary["steps"] == 2 and math.isfinite(summary["final_loss"])
    assert drawn == [0.25, 0.25]


def test_a_run_shorter_than_its_warmup_is_warned_about(small_config, tmp_path, capsys):
    """The schedule then rises for the whole run and never decays (lr_at): the start says so and logs it."""
    train(short := small_config("steps=2", "warmup_tokens=4096", out=tmp_path / "short"))  # 2 steps of 1024 tokens
    assert "warning: warmup_tokens=4096 is longer than the run (2048 tokens)" in capsys.readouterr().out
    start = next(r for r in read_log(short.run_dir) if r["kind"] == "start")
    assert len(start["warnings"]) == 1 and "never decays" in start["warnings"][0]
    train(fits := small_config("steps=2", "warmup_tokens=2048", out=tmp_path / "fits"))
    assert "warning" not in capsys.readouterr().out
    assert next(r for r in read_log(fits.run_dir) if r["kind"] == "start")["warnings"] is None
