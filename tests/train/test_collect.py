"""The training loop collects Python's garbage between steps only (train/collect.py)."""

import gc

import pytest

from foxacp.train import collect, loop
from foxacp.train.collect import manual_gc


def test_manual_gc_turns_collection_off_collects_every_n_steps_and_restores(monkeypatch):
    calls = []
    real = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or real(*a))
    assert gc.isenabled()
    with manual_gc(every=3) as tick:
        assert not gc.isenabled()
        calls.clear()
        for step in range(1, 8):
            tick(step)
    assert calls == [(1,), (1,)]  # steps 3 and 6
    assert gc.isenabled()
    gc.disable()
    try:
        with manual_gc():
            pass
        assert not gc.isenabled()  # a collector that was off stays off
    finally:
        gc.enable()
    with pytest.raises(ValueError, match="every"), manual_gc(every=0):
        pass


def test_steps_run_without_automatic_collection_and_the_collector_comes_back(small_config, monkeypatch):
    seen, ticks = [], []
    real_step = loop._step
    monkeypatch.setattr(loop, "_step", lambda *a: seen.append(gc.isenabled()) or real_step(*a))
    monkeypatch.setattr(collect, "GC_EVERY", 2)
    monkeypatch.setattr(loop, "manual_gc", lambda: manual_gc(every=collect.GC_EVERY))
    real_collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: ticks.append(a) or real_collect(*a))
    loop.train(small_config("steps=4"))
    assert seen == [False] * 4
    assert ticks.count((1,)) >= 2  # after steps 2 and 4
    assert gc.isenabled()
