"""The results index must mark the newest `foxacp eval` set current, as its rule says."""

from __future__ import annotations

import datetime
import time

from foxacp.bench.index import collect
from foxacp.eval.report import run_eval


def test_newest_of_two_same_day_eval_sets_is_current(tiny_loader, tmp_path):
    tiny_loader()
    doc = tmp_path / "doc.txt"
    doc.write_text("the quick brown fox jumps over the lazy dog. " * 4)
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    root = tmp_path / "results"
    # The first (older) run was made at a commit whose hash sorts after the second's: a same-day re-run after a fix.
    older = root / f"{today}-fffffff-passkey-evict-cpu"
    newer = root / f"{today}-0000000-passkey-evict-cpu"
    kw = dict(max_len=16, passkey_lengths=[200], depths=[0.5], trials=1, digits=2, progress=False)
    run_eval("run", doc, older, **kw)
    time.sleep(1.1)  # a second apart: any timestamp the record carries tells them apart
    run_eval("run", doc, newer, **kw)
    sets = {s.path.name: s for s in collect(root)}
    assert sets[newer.name].current, "the index marks the older eval set current (ordered by commit hash)"
    assert not sets[older.name].current
