"""A resumed run is never mixed up with another: refused resumes change nothing, changed settings take
effect, a resume from an older checkpoint branches off cleanly, and logs and checkpoints survive crashes."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import pytest
import torch

import foxacp
import foxacp.train.loop as loop
from foxacp.cli import main
from foxacp.model import FoxLM, ModelConfig
from foxacp.train import CheckpointError
from foxacp.train.checkpoint import load_weights, resolve_checkpoint, save_checkpoint
from foxacp.train.config import TrainConfig
from foxacp.train.distributed import Dist
from foxacp.train.loop import train
from foxacp.train.metrics import SUPERSEDED_LOG, read_log
from foxacp.train.optim import build_optimizer, param_groups

# One micro-batch of 4 x 64 tokens per step: fast on 2 cores.
FAST = ("seq_len=64", "global_batch_tokens=256", "micro_batch_size=4")
ONE = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), distributed=False)
MCFG = ModelConfig(vocab_size=64, n_layers=1, d_model=16, n_heads=2, attn_backend="torch")


def test_a_refused_resume_leaves_the_run_config_as_it_was(small_config):
    """config.json is written only once a resume is accepted: a refused one (another data stream) leaves the
    run's config, so a plain ``--resume --out RUN`` still continues the run."""
    cfg = small_config(*FAST, "steps=2")
    train(cfg)
    before = (cfg.run_dir / "config.json").read_text()
    with pytest.raises(CheckpointError, match="another data stream"):
        train(dataclasses.replace(cfg, seed=1, steps=3), resume=cfg.run_dir)
    assert (cfg.run_dir / "config.json").read_text() == before
    assert main(["train", "--resume", "--out", str(cfg.run_dir), "--steps", "3"]) == 0
    assert json.loads((cfg.run_dir / "config.json").read_text())["steps"] == 3


def test_optimizer_settings_changed_on_resume_take_effect(small_config, tmp_path):
    """The checkpoint's optimizer state brings its hyperparameters; a resume that changes weight decay applies
    the new value: with weight_decay 50 every decayed weight moves differently in the resumed step, every other
    parameter exactly alike."""
    base = small_config(*FAST, "steps=2", out=tmp_path / "base")
    train(base)
    ckpt = base.run_dir / "checkpoints" / "step_000002"
    runs = {wd: dataclasses.replace(base, steps=3, weight_decay=wd, out=str(tmp_path / str(wd))) for wd in (0.1, 50.0)}
    for run in runs.values():
        train(run, resume=ckpt)
    start = [r for r in read_log(runs[50.0].run_dir) if r["kind"] == "start"][-1]
    assert start["resume_changes"]["weight_decay"] == [0.1, 50.0]
    models = {wd: foxacp.load(run.run_dir) for wd, run in runs.items()}
    decayed, plain = param_groups(models[0.1], 1.0)
    names = {id(p): n for n, p in models[0.1].named_parameters()}
    other = dict(models[50.0].named_parameters())
    assert all(not torch.equal(p, other[names[id(p)]]) for p in decayed["params"])
    assert all(torch.equal(p, other[names[id(p)]]) for p in plain["params"])


def test_the_first_record_after_a_torn_log_line_is_kept(small_config):
    """A crash mid-record leaves a torn last line; the resumed run cuts it off before appending, so its own
    start record stays a line of its own."""
    cfg = small_config(*FAST, "steps=2")
    train(cfg)
    with open(cfg.run_dir / "log.jsonl", "a") as f:
        f.write('{"time": 1.0, "kind": "train", "step": 3, "lo')  # killed mid-record
    train(dataclasses.replace(cfg, steps=3), resume=cfg.run_dir)
    kinds = [r["kind"] for r in read_log(cfg.run_dir)]
    assert kinds.count("start") == 2, kinds


def _save(root, step, model, keep=0):
    opt = build_optimizer(model, TrainConfig())
    return save_checkpoint(
        root, step, model, opt, tokens=step, loader_state={}, train_config=TrainConfig(), model_config=MCFG, d=ONE,
        keep=keep,
    )  # fmt: skip


def test_keep_prunes_by_step_number_past_a_million_steps(tmp_path):
    """Pruning orders checkpoints by their step, not their names: step_1000000 is newer than step_999999."""
    model = FoxLM(MCFG)
    for step in (999_998, 999_999, 1_000_000, 1_000_001):
        _save(tmp_path, step, model, keep=2)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert kept == ["step_1000000", "step_1000001"]


def test_a_step_saved_again_keeps_its_complete_checkpoint(tmp_path, monkeypatch):
    """A checkpoint of a step already saved is not swapped in (two renames cannot be atomic): the first stays
    whole and ``latest`` keeps naming it, even when the process dies while the second is written."""
    torch.manual_seed(0)
    first = FoxLM(MCFG)
    _save(tmp_path, 4, first)
    weights = load_weights(resolve_checkpoint(tmp_path))
    import foxacp.train.checkpoint as checkpoint

    real_replace, calls = checkpoint.os.replace, []

    def dying_replace(src, dst):  # the process dies at its second rename, wherever that is
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", dying_replace)
    with contextlib.suppress(KeyboardInterrupt):
        _save(tmp_path, 4, FoxLM(MCFG))
    monkeypatch.undo()
    assert resolve_checkpoint(tmp_path).name == "step_000004"
    _save(tmp_path, 4, FoxLM(MCFG))
    ckpt = resolve_checkpoint(tmp_path)
    assert ckpt.name == "step_000004"
    for name, t in load_weights(ckpt).items():
        torch.testing.assert_close(t, weights[name], rtol=0, atol=0)


def test_resuming_an_older_checkpoint_branches_off(small_config, monkeypatch):
    """Resuming a run from one of its older checkpoints moves the newer ones (the abandoned branch) aside and
    points ``latest`` at the resumed one: after a crash, a plain resume continues the new branch, not the old.
    The abandoned checkpoints are kept, and continuing one of them in place is refused."""
    cfg = small_config(*FAST, "steps=4", "ckpt_every=2")  # step_000002, step_000004
    train(cfg)
    real_step = loop._step

    def dying_step(s, meter, first_step):
        r = real_step(s, meter, first_step)
        if s.step == 3:
            raise RuntimeError("simulated crash at step 3")
        return r

    monkeypatch.setattr(loop, "_step", dying_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(dataclasses.replace(cfg, lr=1e-3), resume=cfg.run_dir / "checkpoints" / "step_000002")
    monkeypatch.undo()
    root = cfg.run_dir / "checkpoints"
    assert resolve_checkpoint(cfg.run_dir).name == "step_000002"
    (abandoned,) = root.glob("abandoned-*")
    assert sorted(p.name for p in abandoned.iterdir()) == [SUPERSEDED_LOG, "step_000004"]  # with its log records
    with pytest.raises(CheckpointError, match="outside its checkpoints"):
        train(cfg, resume=abandoned / "step_000004")
    assert resolve_checkpoint(cfg.run_dir).name == "step_000002"


def test_the_cli_resumes_from_the_checkpoints_own_settings(small_config):
    """``foxacp train --resume CKPT`` starts from the settings CKPT was written with, not from config.json (which
    a later branch of the run may have changed), and takes a run's ``checkpoints`` folder too."""
    cfg = small_config(*FAST, "steps=2")
    train(cfg)
    changed = dataclasses.replace(cfg, steps=4, ckpt_every=2, lr=2e-3)
    train(changed, resume=cfg.run_dir)  # a later branch: config.json now says lr 2e-3
    older = cfg.run_dir / "checkpoints" / "step_000002"
    assert main(["train", "--resume", str(older), "--steps", "3"]) == 0
    start = [r for r in read_log(cfg.run_dir) if r["kind"] == "start"][-1]
    assert start["resume_changes"] == {"steps": [2, 3]}
    assert json.loads((cfg.run_dir / "config.json").read_text())["lr"] == cfg.lr
    assert main(["train", "--resume", str(cfg.run_dir / "checkpoints"), "--steps", "4"]) == 0
    start = [r for r in read_log(cfg.run_dir) if r["kind"] == "start"][-1]
    assert start["resumed_from"].endswith("step_000003") and start["resume_changes"] == {"steps": [3, 4]}


def test_a_resume_on_edited_data_of_the_same_shape_is_refused(small_config, corpus_dir, tmp_path):
    """An edited corpus with the same window count (one character changed) resumed the run on other tokens;
    the loader's state now carries its token file's SHA-1, and the resume is refused as another data stream."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(corpus_dir, data)
    cfg = small_config(*FAST, "steps=2", f"corpus={data}")
    train(cfg)
    name = sorted(p.name for p in data.iterdir())[-1]
    text = (data / name).read_text()
    (data / name).write_text(text.replace("a", "b", 1))
    with pytest.raises(CheckpointError, match="another data stream"):
        train(dataclasses.replace(cfg, steps=3), resume=cfg.run_dir)
