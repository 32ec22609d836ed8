"""The end-to-end decode benchmark's reported numbers (tokens/s, ms/step, kept KV, roofline) on CPU, checked
against a byte count written out here: every weight but the embedding, plus per layer the kept share of
batch x (prompt + steps / 2) positions of K and V (2 x kv_heads x head_dim x element bytes) and c (float32 per
query head), over the given bandwidth.

Catches: K and V counted once; c left out; kept share reported as the saving; tokens/s without the batch;
ms/step not per step; kept KV as the minimum over layers; roofline tokens/s without the batch; of-roofline
inverted; the length without the timed steps; the --bandwidth GB/s read as GiB/s; the batch left out of the cache
bytes; the CPU copy bandwidth as one direction only."""

from __future__ import annotations

import json

import pytest
import torch

from foxacp.bench import decode
from tests.train.conftest import one_thread  # noqa: F401  (autouse: tiny models run fastest on one thread)

CONTEXT, STEPS, BATCH, GBPS = 300, 4, 2, 10.0
# file gates of 2 layers: layer 0 forgets fast (ACP keeps little), layer 1 never (log f = 0: ACP keeps all)
GATES = [-5.0, 0.0]


@pytest.fixture
def run(tmp_path, monkeypatch):
    path = tmp_path / "g.pt"
    torch.save(torch.tensor(GATES)[:, None, None, None].expand(2, 1, 8, 4).clone(), path)
    models, kept_calls = [], []
    real_build, real_kept = decode.build_model, decode.kept_fraction
    monkeypatch.setattr(decode, "build_model", lambda *a: models.append(real_build(*a)) or models[-1])
    monkeypatch.setattr(decode, "kept_fraction", lambda *a: kept_calls.append(real_kept(*a)) or kept_calls[-1])
    args = [
        "--preset",
        "tiny",
        "--batch",
        str(BATCH),
        "--contexts",
        str(CONTEXT),
        "--steps",
        str(STEPS),
        "--bandwidth",
        str(GBPS),
        "--attn-backend",
        "torch",
        "--gates",
        str(path),
        "--out",
        str(tmp_path / "o"),
    ]
    assert decode.main(args) == 0
    payload = json.loads((tmp_path / "o" / "decode-e2e.json").read_text())
    return payload, models[0], kept_calls, (tmp_path / "o" / "decode-e2e.md").read_text()


def test_decode_rows_follow_the_hand_byte_count(run):
    payload, model, kept_calls, md = run
    assert payload["meta"]["bandwidth_gb_s"] == GBPS
    cfg = model.config
    (kept,) = kept_calls  # the ACP mode's per-layer kept share
    assert len(kept) == cfg.n_layers == 4
    # model layer l reads file layer l mod 2: the never-forgetting layers keep every block
    assert kept[1] == kept[3] == 1.0 and kept[0] < 0.5 and kept[2] < 0.5
    weights = 0
    for name, p in model.named_parameters():
        if name != "embed.weight":  # the lookup reads B rows of it, not the table
            weights += p.numel() * 4  # float32 on the CPU
    per_position = 2 * cfg.kv_heads * cfg.head_dim * 4 + 4 * cfg.n_heads  # K and V (fp32 here), c (float32)
    length = CONTEXT + STEPS / 2
    rows = payload["rows"]
    assert [r["mode"] for r in rows] == ["exact", "acp"]
    for r in rows:
        layers = [1.0] * 4 if r["mode"] == "exact" else kept
        assert r["kept_kv"] == pytest.approx(sum(layers) / 4)
        nbytes = weights + sum(BATCH * length * per_position * k for k in layers)
        floor_s = nbytes / (GBPS * 1e9)
        step_s = r["ms_per_step"] / 1e3
        assert r["tokens_per_s"] == pytest.approx(BATCH / step_s, rel=1e-9)
        assert r["roofline_tokens_per_s"] == pytest.approx(BATCH / floor_s, rel=1e-9)
        assert r["of_roofline"] == pytest.approx(floor_s / step_s, rel=1e-9)
        assert f"| {100 * r['of_roofline']:.0f}% | {100 * r['kept_kv']:.0f}% |" in md


def test_cpu_copy_bandwidth_counts_read_and_write(monkeypatch):
    monkeypatch.setattr(decode, "seconds", lambda fn, device: 0.25)
    assert decode.copy_bandwidth(torch.device("cpu")) == 2 * 2**26 / 0.25
