"""The eviction benchmark runs on CPU with the tiny preset and writes its results."""

import json

from foxacp.bench.evict import main
from tests.train.conftest import one_thread  # noqa: F401  (autouse: tiny models run fastest on one thread)


def test_tiny_run_writes_rows(tmp_path, capsys):
    out = tmp_path / "evict"
    args = ["--preset", "tiny", "--contexts", "300,600", "--budget-gb", "0.02", "--steps", "3", "--chunk", "128"]
    assert main([*args, "--attn-backend", "torch", "--out", str(out)]) == 0
    result = json.loads((out / "evict.json").read_text())
    assert [r["context"] for r in result["memory"]] == [300, 600]
    for r in result["memory"]:
        assert 0 < r["held_fraction"] < 1 and r["held_fraction"] <= r["peak_fraction"]
    full, evict = result["batch"]
    assert full["mode"] == "full" and evict["mode"] == "evict" and evict["batch"] > full["batch"] >= 1
    assert full["tokens_per_s"] > 0 and evict["tokens_per_s"] > 0
    assert result["meta"]["kernel_max_abs_err"] < 1e-4
    assert "largest batch" in (out / "evict.md").read_text()
    assert "| target |" in capsys.readouterr().out
