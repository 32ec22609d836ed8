"""Smoke test of experiments/026-backward-block-sweep/sweep.py on the CPU (Triton interpreter, tiny shapes,
a fake timer); its timings need a GPU: python experiments/026-backward-block-sweep/sweep.py."""

import pytest

from foxacp.ops.config import kernel_config
from tests.experiments import EXPERIMENTS, load_script

SCRIPT = EXPERIMENTS / "026-backward-block-sweep" / "sweep.py"


@pytest.fixture(scope="module")
def sweep():
    return load_script(SCRIPT)


def test_sweep_checks_times_and_skips(sweep):
    seen = []

    def timer(fn, leaves):
        seen.append(kernel_config(leaves[0].device, 16))  # the variant is in force while timed
        fn()
        return 1.5

    argv = ["--device", "cpu", "--heads", "2", "--head-dim", "16", "--contexts", "70", "--tokens", "70"]
    rows = sweep.main([*argv, "--variants", "table,dkdv64x64s4,dq128x64s4"], timer=timer)
    timed = [r for r in rows if "ms" in r]
    assert [(r["variant"], r["log_eps"]) for r in timed] == [
        (v, e) for v in ("table", "dkdv64x64s4") for e in (None, -10.0)
    ]
    assert all(r["ms"] == 1.5 and 0 <= r["err_over_tol"] < 1 for r in timed)
    assert seen[2].dkdv.num_stages == 4 and seen[0] != seen[2]
    (skipped,) = [r for r in rows if "skipped" in r]
    assert skipped["variant"] == "dq128x64s4"  # 128-row blocks do not divide the CPU's 64x64 tile grid
    with pytest.raises(SystemExit):
        sweep.main([*argv, "--variants", "nope"], timer=timer)
