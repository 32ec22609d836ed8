"""save_checkpoint's order of durable steps: every file fsynced before the folder is renamed into place, the rename
made durable, and ``latest`` moved only once the checkpoint it names exists."""

from __future__ import annotations

import json
import os

import pytest

from foxacp.train import checkpoint as ck
from foxacp.train.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from tests.train.test_checkpoint import MCFG, ONE, save, trained


def test_a_crash_at_the_rename_leaves_latest_on_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = trained()
    save(tmp_path, 1, model, opt)
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if os.path.basename(str(dst)) == "step_000002":
            raise KeyboardInterrupt("killed at the rename")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 2, model, opt)
    monkeypatch.undo()
    assert resolve_checkpoint(tmp_path).name == "step_000001"
    assert load_checkpoint(tmp_path, *trained(1), model_config=MCFG, d=ONE)["step"] == 1


def test_every_file_is_fsynced_before_the_rename_and_the_rename_before_latest(tmp_path, monkeypatch):
    model, opt = trained()
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, *a, **k):
        events.append(("replace", str(dst)))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save(tmp_path, 3, model, opt)
    monkeypatch.undo()
    root = tmp_path / "checkpoints"
    final = str(root / "step_000003")
    i_rename = events.index(("replace", final))
    before = [os.path.basename(p) for kind, p in events[:i_rename] if kind == "fsync"]
    for name in (ck.WEIGHTS, ck.STATE, ck.META):
        assert name in before, f"{name} not fsynced before the rename: {before}"
    assert any(b.startswith(".step_000003.tmp-") for b in before), "the new folder's entries not fsynced"
    i_latest = events.index(("replace", str(root / "latest")))
    assert i_rename < i_latest
    assert ("fsync", str(root)) in events[i_rename:i_latest], "the rename not made durable before latest moved"


def test_a_grown_file_is_refused_even_without_the_sha256_check(tmp_path):
    """read_meta(verify=False) (the resume's quick check) still compares sizes exactly: bytes appended to state.pt
    are damage, not only bytes cut off."""
    model, opt = trained()
    path = save(tmp_path, 1, model, opt)
    with open(path / ck.STATE, "ab") as f:
        f.write(b"appended garbage")
    with pytest.raises(CheckpointError, match="bytes, expected"):
        ck.read_meta(path, verify=False)


def test_a_meta_that_does_not_list_state_pt_is_refused(tmp_path):
    """Every file the load reads is verified: a meta.json listing only the weights would leave state.pt unchecked."""
    model, opt = trained()
    path = save(tmp_path, 1, model, opt)
    meta = json.loads((path / ck.META).read_text())
    del meta["files"][ck.STATE]
    (path / ck.META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="malformed"):
        ck.read_meta(path)


def test_a_latest_pointer_that_leads_out_of_checkpoints_is_refused(tmp_path):
    """``latest`` holds a bare checkpoint name: one with more after it (a path out of the folder) is malformed, even
    where that path exists (here: another run's checkpoint)."""
    model, opt = trained()
    save(tmp_path / "a", 1, model, opt)
    save(tmp_path / "b", 5, model, opt)
    (tmp_path / "a" / "checkpoints" / "latest").write_text("step_000001/../../../b/checkpoints/step_000005\n")
    with pytest.raises(CheckpointError, match="latest is malformed"):
        resolve_checkpoint(tmp_path / "a")
    (tmp_path / "a" / "checkpoints" / "step_000001.bak").mkdir()
    (tmp_path / "a" / "checkpoints" / "latest").write_text("step_000001.bak\n")
    with pytest.raises(CheckpointError, match="latest is malformed"):
        resolve_checkpoint(tmp_path / "a")


def test_the_load_restores_python_and_numpy_random_states_too(tmp_path):
    import random

    import numpy as np

    model, opt = trained()
    random.seed(1)
    np.random.seed(2)
    save(tmp_path, 1, model, opt)
    expected = (random.random(), np.random.rand())
    random.seed(99)
    np.random.seed(99)
    load_checkpoint(tmp_path, *trained(1), model_config=MCFG, d=ONE)
    assert (random.random(), np.random.rand()) == expected


def test_an_architecture_field_missing_from_the_checkpoint_counts_as_a_difference(tmp_path):
    model, opt = trained()
    path = save(tmp_path, 1, model, opt)
    meta = json.loads((path / ck.META).read_text())
    del meta["model_config"]["norm_eps"]  # the weights still fit: only the config can tell
    (path / ck.META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="different model: norm_eps: checkpoint None vs run 1e-05"):
        load_checkpoint(tmp_path, *trained(1), model_config=MCFG, d=ONE)


def test_branch_off_moves_latest_first_and_makes_the_moves_durable(tmp_path, monkeypatch):
    model, opt = trained()
    for step in (1, 2, 3):
        save(tmp_path, step, model, opt, keep=0)
    root = tmp_path / "checkpoints"
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))[1]
    )
    monkeypatch.setattr(
        os,
        "replace",
        lambda s, d, *a, **k: (events.append(("replace", str(s), str(d))), real_replace(s, d, *a, **k))[1],
    )
    dest = ck.branch_off(tmp_path, root / "step_000001", 1)
    monkeypatch.undo()
    assert sorted(p.name for p in dest.iterdir()) == ["step_000002", "step_000003"]
    moves = [i for i, e in enumerate(events) if e[0] == "replace" and os.path.basename(e[1]).startswith("step_")]
    latest = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(root / "latest"))
    assert len(moves) == 2 and latest < moves[0]
    assert ("fsync", str(root)) in events[moves[-1] :], "the moves out of checkpoints/ were not made durable"
    assert resolve_checkpoint(tmp_path).name == "step_000001"
