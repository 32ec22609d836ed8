"""evict.batch_rows sizes the evicting batch by the busiest layer: each layer has a pool of budget / n_layers, so when
layers hold different amounts (``--gates FILE`` of several layers) a batch sized by the sum over layers would
exhaust the busiest layer's pool (CachePoolExhausted after the memory rows, nothing written)."""

from __future__ import annotations

import json

import torch

from foxacp.bench.evict import main
from tests.train.conftest import one_thread  # noqa: F401


def test_evicting_batch_fits_when_layers_hold_different_amounts(tmp_path):
    T, H = 64, 4
    fast = torch.full((1, T, H), -5.0)  # layer 0 (and 2): everything but the newest block is pruned
    slow = torch.full((1, T, H), -1e-6)  # layer 1 (and 3): nothing is ever pruned
    torch.save(torch.stack([fast, slow]), tmp_path / "g.pt")
    out = tmp_path / "evict"
    args = ["--preset", "tiny", "--contexts", "640", "--budget-gb", "0.02", "--steps", "2", "--chunk", "128"]
    args += ["--gates", str(tmp_path / "g.pt"), "--attn-backend", "torch", "--out", str(out)]
    assert main(args) == 0
    result = json.loads((out / "evict.json").read_text())
    full, evict = result["batch"]
    assert evict["batch"] >= 1 and evict["tokens_per_s"] > 0
