"""Run ``python -m foxacp.bench.throughput`` with Python's automatic garbage collection left on during the steps (the
behaviour before train/collect.py), as the baseline of the same device call:
``python experiments/062-gc-between-steps/gc_auto.py <bench.throughput args>``."""

import contextlib
import runpy

import foxacp.train.collect as collect


@contextlib.contextmanager
def automatic_gc():
    yield lambda step: None  # no collections of its own: the interpreter's automatic ones run where they fall


collect.manual_gc = automatic_gc  # the benchmark, run afresh below, imports it from there
runpy.run_module("foxacp.bench.throughput", run_name="__main__", alter_sys=True)
