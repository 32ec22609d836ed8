"""The trainer's reported ACP savings, peak FLOP/s and MFU against values computed by hand.

Catches: acp_layer summed over the head axis (invisible in the existing tests, whose L == H); acp_head
reported as the kept share; the fraction of an empty count 0 instead of 1; the peak table's bf16 figure in
GFLOP/s, or "H100" matched before "H100 PCIe" / "H100 NVL"; the trainer's MFU not divided by the world size; its
tokens/s not multiplied by the window's steps."""

from __future__ import annotations

import types

import pytest
import torch

from foxacp.model import FoxLM, ModelConfig
from foxacp.train import loop, metrics
from foxacp.train.metrics import AcpMeter, acp_summary, peak_flops


def test_acp_summary_by_layer_and_head():
    # 2 layers x 3 heads: different shapes along the two axes, so a sum over the wrong one shows
    visited = torch.tensor([[1, 2, 3], [4, 0, 6]])
    causal = torch.tensor([[4, 4, 4], [8, 8, 8]])
    s = acp_summary(visited, causal)
    assert s["attn_fraction"] == pytest.approx(16 / 36)
    assert s["acp_saving"] == pytest.approx(20 / 36)
    assert s["acp_layer"] == pytest.approx([1 - 6 / 12, 1 - 10 / 24], abs=1e-5)
    assert s["acp_head"] == [pytest.approx([0.75, 0.5, 0.25], abs=1e-5), pytest.approx([0.5, 1.0, 0.25], abs=1e-5)]


def test_acp_summary_of_no_tiles_keeps_everything():
    s = acp_summary(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long))
    assert s["attn_fraction"] == 1.0 and s["acp_saving"] == 0.0


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA GH200 480GB", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L40", 181.0),
        ("NVIDIA A10G", 70.0),
        ("Some Future GPU", metrics.DEFAULT_PEAK_TFLOPS),
    ],
)
def test_peak_flops_by_device_name(monkeypatch, name, tflops):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    peak, _ = peak_flops(torch.device("cuda"))
    assert peak == tflops * 1e12
    assert peak_flops(torch.device("cuda"), 100.0)[0] == 100.0 * 1e12


def test_trainer_mfu_is_per_device_over_the_attention_spans():
    mcfg = ModelConfig(vocab_size=96, n_layers=2, d_model=64, n_heads=4)
    with torch.device("meta"):
        model = FoxLM(mcfg)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    world, steps, batch_tokens, elapsed, peak = 4, 3, 4096, 2.0, 1e12
    spans = [3 * 256.0**2 + 2 * 128.0**2, 3 * 256.0 + 2 * 128.0]  # sum L^2, sum L over 5 documents
    meter = AcpMeter()
    meter.visited, meter.causal = torch.tensor([[3, 5], [2, 2]]), torch.tensor([[8, 8], [4, 4]])  # 12 / 24 kept
    logged = []
    s = types.SimpleNamespace(
        cfg=types.SimpleNamespace(global_batch_tokens=batch_tokens, seq_len=512, pack=True, total_steps=10),
        d=types.SimpleNamespace(device=torch.device("cpu"), world_size=world, distributed=False),
        mcfg=mcfg, peak=peak, logger=types.SimpleNamespace(log=logged.append), say=lambda text: None,
        step=7, tokens=7 * batch_tokens,
    )  # fmt: skip
    window = types.SimpleNamespace(close=lambda: elapsed, loss=3.0 * steps, steps=steps, meter=meter, spans=spans,
                                   reset=lambda: None)  # fmt: skip
    rec = loop._log_window(s, window, types.SimpleNamespace(lr=1e-3, grad_norm=1.0))
    tps = steps * batch_tokens / elapsed  # the tokens of all ranks
    assert rec["tokens_per_s"] == pytest.approx(tps)
    span = spans[0] / spans[1]
    attn = mcfg.n_layers * 6 * mcfg.d_model * span * 0.5  # 12 of 24 causal tiles visited
    assert rec["mfu"] == pytest.approx(tps * (6 * matmul + attn) / (peak * world), rel=1e-9)
    assert logged == [rec]
