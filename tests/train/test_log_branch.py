"""Resuming from an older checkpoint branches off: its newer checkpoints move to checkpoints/abandoned-*/, and the
log records of the steps after the resumed one move with them (log-superseded.jsonl), so the run's history holds one
branch. They used to stay in log.jsonl, where the plot mixed the abandoned branch's steps into the new one's."""

from __future__ import annotations

import json

from foxacp.train.loop import train
from foxacp.train.metrics import SUPERSEDED_LOG, read_log
from foxacp.train.plot import _by_step

from .run_helpers import FAST


def test_an_abandoned_branch_leaves_no_train_records_in_the_run(small_config):
    # The first branch: 6 steps at peak lr 2e-3, logged every step, checkpoints at 2, 4 and 6.
    first = small_config(*FAST, "steps=6", "ckpt_every=2", "ckpt_keep=0", "warmup_tokens=512")
    train(first)
    old = {r["step"]: r["lr"] for r in read_log(first.run_dir) if r["kind"] == "train"}
    assert sorted(old) == [1, 2, 3, 4, 5, 6]

    # The user goes back to step 2 with a lower learning rate (and logs every 2 steps): a new branch.
    branch = ("steps=6", "ckpt_every=2", "ckpt_keep=0", "warmup_tokens=512", "lr=1e-3", "log_every=2")
    second = small_config(*FAST, *branch)
    train(second, resume=first.run_dir / "checkpoints" / "step_000002")
    assert len(list((first.run_dir / "checkpoints").glob("abandoned-*"))) == 1  # the checkpoints branched off

    # What the run's log presents as its history (the plot's view): steps 1-2 of the common trunk, then only the
    # new branch's steps 4 and 6; the abandoned branch's records moved next to its checkpoints.
    plotted = _by_step(read_log(first.run_dir), "train")
    stale = [(r["step"], r["lr"], old[r["step"]]) for r in plotted if r["step"] in (3, 5)]
    assert [r["step"] for r in plotted] == [1, 2, 4, 6], f"(step, lr, old branch's lr) of stale records: {stale}"
    (abandoned,) = (first.run_dir / "checkpoints").glob("abandoned-*")
    moved = [json.loads(line) for line in (abandoned / SUPERSEDED_LOG).read_text().splitlines()]
    assert sorted(r["step"] for r in moved if r["kind"] == "train") == [3, 4, 5, 6]
