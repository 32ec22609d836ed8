"""Checkpoints: round trip, atomic writes, and clear errors for missing, corrupt or mismatched ones."""

from __future__ import annotations

import json

import pytest
import torch

from foxacp.model import FoxLM, ModelConfig
from foxacp.train.checkpoint import (
    LATEST,
    META,
    STATE,
    WEIGHTS,
    CheckpointError,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from foxacp.train.config import TrainConfig
from foxacp.train.distributed import Dist
from foxacp.train.optim import build_optimizer

ONE = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), distributed=False)
MCFG = ModelConfig(vocab_size=64, n_layers=2, d_model=32, n_heads=2, attn_backend="torch")


def trained(seed: int = 0, mcfg: ModelConfig = MCFG):
    """A model and optimizer after one step (so the optimizer has state)."""
    torch.manual_seed(seed)
    model = FoxLM(mcfg)
    opt = build_optimizer(model, TrainConfig())
    model(torch.randint(0, 64, (2, 16))).square().mean().backward()
    opt.step()
    opt.zero_grad()
    return model, opt


def save(run, step, model, opt, **kw):
    args = dict(tokens=step * 10, loader_state={"step": step}, train_config=TrainConfig(), model_config=MCFG)
    args.update(kw)
    return save_checkpoint(run, step, model, opt, d=ONE, **args)


def test_round_trip_restores_weights_optimizer_rng_and_state(tmp_path):
    model, opt = trained(0)
    torch.manual_seed(123)
    path = save(tmp_path, 7, model, opt)
    after_save = torch.rand(3)
    assert (tmp_path / "checkpoints" / LATEST).read_text().strip() == "step_000007"
    assert resolve_checkpoint(tmp_path) == path

    other, other_opt = trained(1)
    state = load_checkpoint(tmp_path, other, other_opt, model_config=MCFG, d=ONE)
    assert state["step"] == 7 and state["tokens"] == 70 and state["loader"] == {"step": 7}
    assert torch.equal(torch.rand(3), after_save)  # the RNG continues where the saved run was
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    sa, sb = opt.state_dict()["state"], other_opt.state_dict()["state"]
    for i in sa:
        assert torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"])


def test_keep_only_newest_checkpoints(tmp_path):
    model, opt = trained()
    for step in (1, 2, 3):
        save(tmp_path, step, model, opt, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step_000002", "step_000003"]


def test_interrupted_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = trained()
    save(tmp_path, 1, model, opt)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 2, model, opt)
    monkeypatch.undo()
    root = tmp_path / "checkpoints"
    assert not (root / "step_000002").exists()
    assert resolve_checkpoint(tmp_path) == root / "step_000001"
    assert load_checkpoint(tmp_path, *trained(1), model_config=MCFG, d=ONE)["step"] == 1
    save(tmp_path, 2, model, opt)  # the leftover temp dir does not get in the way
    assert resolve_checkpoint(tmp_path).name == "step_000002"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: (c / META).unlink(), "meta.json is missing"),
        (lambda c: (c / WEIGHTS).unlink(), "model.safetensors is missing"),
        (lambda c: (c / STATE).write_bytes((c / STATE).read_bytes()[:100]), "truncated"),
        (lambda c: _flip_byte(c / WEIGHTS), "does not match its sha256"),
        (lambda c: (c / META).write_text("{not json"), "does not parse"),
    ],
)
def test_damaged_checkpoint_raises(tmp_path, damage, message):
    model, opt = trained()
    ckpt = save(tmp_path, 1, model, opt)
    damage(ckpt)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path, *trained(1), model_config=MCFG, d=ONE)


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_missing_checkpoint_raises(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere", *trained(), model_config=MCFG, d=ONE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no meta.json"):
        load_checkpoint(tmp_path / "empty", *trained(), model_config=MCFG, d=ONE)
    root = tmp_path / "dangling" / "checkpoints"
    root.mkdir(parents=True)
    (root / LATEST).write_text("step_000009\n")
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "dangling")


def test_mismatched_model_config_raises(tmp_path):
    model, opt = trained()
    save(tmp_path, 1, model, opt)
    wider = ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=2, attn_backend="torch")
    with pytest.raises(CheckpointError, match="different model: d_model: checkpoint 32 vs run 64"):
        load_checkpoint(tmp_path, *trained(0, wider), model_config=wider, d=ONE)
    # Runtime switches (ACP on/off, backend, stats) may change on resume.
    exact = ModelConfig(vocab_size=64, n_layers=2, d_model=32, n_heads=2, acp=False)
    assert load_checkpoint(tmp_path, *trained(0, exact), model_config=exact, d=ONE)["step"] == 1


def test_weights_that_do_not_fit_raise(tmp_path):
    model, opt = trained()
    ckpt = save(tmp_path, 1, model, opt)
    meta = json.loads((ckpt / META).read_text())
    meta["model_config"]["n_layers"] = 3  # a meta that lies about the weights
    (ckpt / META).write_text(json.dumps(meta))
    three = ModelConfig(vocab_size=64, n_layers=3, d_model=32, n_heads=2, attn_backend="torch")
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_checkpoint(tmp_path, *trained(0, three), model_config=three, d=ONE)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: (c / META).write_text("[]"), r"meta.json is malformed \(not a JSON object\)"),
        (lambda c: (c / META).write_text('{"format": 1, "step": 1}'), "meta.json is malformed"),
        (lambda c: _edit_meta(c, files={"model.safetensors": 3}), "meta.json is malformed"),
        (lambda c: (c.parent / LATEST).write_bytes(b"\xff\xfe\x00"), "latest is malformed"),
        (lambda c: (c.parent / LATEST).write_text("../../etc\n"), "latest is malformed"),
        (lambda c: (c.parent / LATEST).write_text(""), "latest is malformed"),
    ],
)
def test_malformed_meta_or_latest_pointer_raise_checkpoint_errors(tmp_path, damage, message):
    model, opt = trained()
    ckpt = save(tmp_path, 1, model, opt)
    damage(ckpt)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path, *trained(1), model_config=MCFG, d=ONE)


def _edit_meta(ckpt, **changes):
    meta = json.loads((ckpt / META).read_text())
    meta.update(changes)
    (ckpt / META).write_text(json.dumps(meta))
