"""The end-to-end decoding benchmark runs on CPU with the tiny preset and writes its results."""

import json

from foxacp.bench.decode import main, step_bytes
from foxacp.model import FoxLM, ModelConfig
from tests.train.conftest import one_thread  # noqa: F401  (autouse: tiny models run fastest on one thread)


def test_tiny_run_writes_rows(tmp_path, capsys):
    out = tmp_path / "res"
    args = ["--preset", "tiny", "--batch", "1,2", "--contexts", "70", "--steps", "3", "--bandwidth", "10"]
    args += ["--attn-backend", "torch"]
    assert main([*args, "--out", str(out)]) == 0
    rows = json.loads((out / "decode-e2e.json").read_text())["rows"]
    assert [(r["batch"], r["mode"], r["decode"]) for r in rows] == [
        (b, m, "eager") for b in (1, 2) for m in ("exact", "acp")
    ]
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["prefill_s"] > 0 and 0 < r["kept_kv"] <= 1
        assert r["gates"] == "synthetic" and r["context"] == 70
    assert "| tokens/s |" in (out / "decode-e2e.md").read_text()
    assert "tokens/s" in capsys.readouterr().out.splitlines()[-len(rows) - 2]


def test_step_bytes_counts_weights_and_kept_cache():
    model = FoxLM(ModelConfig.from_preset("tiny"))
    weights = sum(p.numel() * 4 for n, p in model.named_parameters() if n != "embed.weight")
    cfg = model.config
    per_token = 2 * cfg.kv_heads * cfg.head_dim * 2 + 4 * cfg.n_heads
    kept = [1.0, 0.5, 0.25, 0.0]
    assert step_bytes(model, 3, 100, kept, 2) == weights + 3 * 100 * per_token * sum(kept)
    assert step_bytes(model, 3, 100, [0.0] * 4, 2) == weights
