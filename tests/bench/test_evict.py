"""The eviction benchmark runs on CPU with the tiny preset and writes its results."""

import json

import torch

from foxacp.bench.decode import build_model, gate_table
from foxacp.bench.evict import fill, main, parse_args
from tests.bench.test_decode import cached_gate_steps, expected_steps, gates_file
from tests.train.conftest import one_thread  # noqa: F401  (autouse: tiny models run fastest on one thread)


def test_tiny_run_writes_rows(tmp_path, capsys):
    out = tmp_path / "evict"
    args = ["--preset", "tiny", "--contexts", "300,600", "--budget-gb", "0.02", "--steps", "3", "--chunk", "128"]
    assert main([*args, "--attn-backend", "torch", "--schedule", "balanced", "--out", str(out)]) == 0
    result = json.loads((out / "evict.json").read_text())
    assert result["meta"]["decode_schedule"] == "balanced"
    assert [r["context"] for r in result["memory"]] == [300, 600]
    for r in result["memory"]:
        assert 0 < r["held_fraction"] < 1 and r["held_fraction"] <= r["peak_fraction"]
    full, evict = result["batch"]
    assert full["mode"] == "full" and evict["mode"] == "evict" and evict["batch"] > full["batch"] >= 1
    assert full["tokens_per_s"] > 0 and evict["tokens_per_s"] > 0
    assert result["meta"]["kernel_max_abs_err"] < 1e-4
    assert "largest batch" in (out / "evict.md").read_text()
    assert "| target |" in capsys.readouterr().out


def test_fill_writes_layer_l_mod_n_and_row_b_mod_batch_gates(tmp_path):
    path = gates_file(tmp_path / "g.pt")
    model = build_model("tiny", torch.float32, torch.device("cpu"), "torch")
    for extra, file_layer in (([], None), (["--gates-layer", "0"], 0)):
        args = parse_args(["--preset", "tiny", "--gates", path, *extra, "--out", str(tmp_path)])
        table = gate_table(args, 5, 40, 48, model.config.n_heads, torch.device("cpu"))
        cache = model.new_cache(5, 48)
        fill(model, cache, table, 40, 16)  # chunks of 16: the gates continue across chunk borders
        steps = cached_gate_steps(cache, 40)
        want = expected_steps(4, 5, file_layer)[:, :, None, None].expand_as(steps)
        assert torch.allclose(steps, want, atol=1e-5)


def test_tiny_run_with_file_gates_labels_the_mapping(tmp_path):
    out = tmp_path / "evict"
    args = ["--preset", "tiny", "--contexts", "300", "--budget-gb", "0.01", "--steps", "2", "--chunk", "128"]
    args += ["--gates", gates_file(tmp_path / "g.pt"), "--attn-backend", "torch", "--out", str(out)]
    assert main(args) == 0
    result = json.loads((out / "evict.json").read_text())
    assert result["meta"]["gates"] == result["memory"][0]["gates"] == "file:g.pt (layer l <- l mod 2)"
    assert result["batch"][1]["batch"] > 2  # the evicting batch reads the file's 2 rows b mod 2
    assert "file:g.pt (layer l <- l mod 2) gates" in (out / "evict.md").read_text()
