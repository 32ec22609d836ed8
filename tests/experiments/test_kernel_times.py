"""Smoke test of experiments/028-fewer-launches-per-call/kernel_times.py on the CPU (interpreted kernels, CPU
profiler, tiny shapes); its measurements need a GPU: python experiments/028-fewer-launches-per-call/kernel_times.py."""

from tests.experiments import EXPERIMENTS, load_script

SCRIPT = EXPERIMENTS / "028-fewer-launches-per-call" / "kernel_times.py"


def test_kernel_times_profiles_every_mode_and_eps():
    module = load_script(SCRIPT)
    rows = module.main(["--device", "cpu", "--shapes", "2x16x70", "--tokens", "70", "--calls", "1"])
    assert [(r["mode"], r["log_eps"]) for r in rows] == [(m, e) for m in ("fwd", "fwdbwd") for e in (None, -10.0)]
    for r in rows:
        assert r["kernels"] and all(ms >= 0 for ms in r["kernels"].values())
    fwd, fwdbwd = (sum(rows[i]["kernels"].values()) for i in (0, 2))
    assert fwdbwd > fwd  # the backward adds its kernels
