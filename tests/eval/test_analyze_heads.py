"""``foxacp analyze``'s --heads-per-layer draws the heads asked for, not at most three."""

from __future__ import annotations

from collections import Counter

from foxacp.eval.analyze import run_analyze


def test_heads_per_layer_above_three_is_honoured_or_refused(tiny_loader, tmp_path):
    tiny_loader(n_heads=8, d_model=128)  # 8 heads: 4 distinct heads per layer exist to draw
    doc = tmp_path / "doc.txt"
    doc.write_text("hello world, " * 10)
    rec = run_analyze("run", doc, tmp_path / "an", max_len=40, heads_per_layer=4, progress=False,
                      log_eps_sweep=(-10.0,), tile_sweep=(16,))  # fmt: skip
    per_layer = Counter(layer for layer, _ in rec["decay_map_heads"])
    assert per_layer == {0: 4, 1: 4}, f"asked for 4 decay maps per layer, got {dict(per_layer)}"
