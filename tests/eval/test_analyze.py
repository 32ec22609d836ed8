"""``foxacp analyze``: the boundary search on a model's recorded inputs against the pruning of a real forward,
the decay map by hand, monotone sweeps, and the command's outputs."""

from __future__ import annotations

import json

import pytest
import torch

from foxacp.cli import main
from foxacp.eval.analyze import ANALYZE_FILES, _picked_heads
from foxacp.eval.pruning import attention_inputs, head_savings, layer_plan, total_saving
from foxacp.eval.search_time import search_share
from foxacp.model import FoxLM, ModelConfig
from foxacp.ops.config import kernel_config
from tests.eval.test_report import tiny_run  # noqa: F401  (fixture)
from tests.train.conftest import cache_dir, corpus_dir, one_thread  # noqa: F401  (fixtures)


def _model(variant: str, seed: int) -> FoxLM:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=64, n_layers=2, d_model=64, n_heads=4, variant=variant, attn_backend="torch", record_acp_stats=True
    )
    model = FoxLM(cfg).eval()
    with torch.no_grad():  # heads that forget at different rates: some prune a lot, some little
        for block in model.blocks:
            block.attn.fgate.bias.copy_(torch.tensor([-1.0, 2.0, 4.0, 7.0]))
    return model


@pytest.mark.parametrize("variant", ["fox_pro", "fox"])
def test_per_head_saving_matches_the_pruning_of_a_real_forward(variant):
    model = _model(variant, 0)
    ids = torch.randint(0, 64, (1, 333))
    with torch.no_grad():
        model(ids)
    want = torch.stack([s.per_head_saving for s in model.acp_stats()])
    kc = kernel_config(torch.device("cpu"), model.config.head_dim)
    got = head_savings(attention_inputs(model, ids), log_eps=model.config.log_eps, tile=(kc.tile_m, kc.tile_n))
    assert torch.equal(got, want)
    assert want.min() < want.max()  # the heads differ, so the comparison is not trivial


def test_decay_map_is_the_difference_of_cumulative_gates():
    model = _model("fox_pro", 1)
    ids = torch.randint(0, 64, (1, 50))
    layer = attention_inputs(model, ids)[1]
    d = layer.decay(2)
    g = model.forget_gates(ids)[1, 0, :, 2].double()
    assert d[30, 10].item() == pytest.approx(g[11:31].sum().item(), rel=1e-9, abs=1e-12)
    assert d[7, 7] == 0 and d[3, 9] == -torch.inf
    for step in (3, 7, 50):  # the drawn maps: every step-th row and column, never the whole map first
        assert torch.equal(layer.decay(2, step), d[::step, ::step])


def test_saving_grows_with_eps_and_with_finer_nested_tiles():
    layers = attention_inputs(_model("fox", 2), torch.randint(0, 64, (1, 300)))
    by_eps = [total_saving(layers, log_eps=e, tile=32) for e in (-20.0, -10.0, -3.0, -1.0)]
    assert by_eps == sorted(by_eps) and by_eps[-1] > by_eps[0]
    by_tile = [total_saving(layers, log_eps=-10.0, tile=t) for t in (1, 8, 32, 128)]
    assert by_tile == sorted(by_tile, reverse=True)
    with pytest.raises(ValueError, match="tile"):
        layer_plan(layers[0], log_eps=-10.0, tile=0)
    with pytest.raises(ValueError, match="log_eps"):
        layer_plan(layers[0], log_eps=0.0, tile=16)


def test_transformer_and_batches_are_refused():
    with pytest.raises(ValueError, match="no forget gate"):
        attention_inputs(
            FoxLM(ModelConfig(vocab_size=64, n_layers=1, d_model=32, n_heads=2, variant="transformer")),
            torch.zeros(1, 4, dtype=torch.long),
        )
    with pytest.raises(ValueError, match=r"\(1, T\)"):
        attention_inputs(_model("fox", 0), torch.zeros(2, 4, dtype=torch.long))


def test_picked_heads_take_least_median_and_most_saving_per_layer():
    saving = torch.tensor([[0.5, 0.1, 0.9, 0.3], [0.2, 0.2, 0.2, 0.2], [0.0, 1.0, 0.5, 0.7]])
    assert _picked_heads(saving, 3, 6) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (1, 3), (2, 0), (2, 1), (2, 3)]
    assert _picked_heads(saving, 1, 2) == [(0, 1), (2, 0)]


def test_analyze_command_writes_the_record_and_plots(tiny_run, corpus_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "an"
    cmd = ["analyze", str(tiny_run), "--data", str(corpus_dir), "--out", str(out), "--device", "cpu"]
    assert main([*cmd, "--max-len", "200", "--tile", "16", "--dtype", "bfloat16"]) == 0
    assert "analyze.json" in capsys.readouterr().out
    rec = json.loads((out / "analyze.json").read_text())
    assert rec["tokens"] == 200 and rec["tile"] == [16, 16] and rec["log_eps"] == -10.0
    assert len(rec["head_saving"]) == 2 and len(rec["head_saving"][0]) == 2
    assert all(0 <= v <= 1 for row in rec["head_saving"] for v in row)
    assert rec["log_eps_sweep"]["log_eps"][0] == -1.0 and rec["log_eps_sweep"]["log_eps"][-1] == -20.0
    assert len(rec["log_eps_sweep"]["per_layer"]) == 2 and rec["tile_sweep"]["tiles"][0] == 1
    assert rec["meta"]["model"] == str(tiny_run.resolve()) and rec["meta"]["commit"]
    assert rec["meta"]["dtype"] == "bfloat16" and rec["search_time"] is None  # timed on CUDA only
    for png in ("decay_maps.png", "head_saving.png", "saving_vs_log_eps.png", "saving_vs_tile.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # ANALYZE_FILES (removed before a rerun) names exactly what a run writes.
    assert sorted(p.name for p in out.iterdir()) == sorted(ANALYZE_FILES)
    assert main([*cmd[:2], "--data", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*cmd, "--tile", "0"]) == 2
    assert "tile" in capsys.readouterr().err


@pytest.mark.parametrize("variant", ["fox_pro", "fox"])
def test_search_share_times_the_search_the_forward_and_the_backward_of_every_layer(variant):
    layers = attention_inputs(_model(variant, 1), torch.randint(0, 64, (1, 90)))
    ran = []

    def bench(fn):  # runs each timed function once (they must work) and returns a fixed time per kind
        out = fn()
        ran.append(type(out).__name__)
        return {0: 1.0, 1: 4.0, 2: 10.0}[(len(ran) - 1) % 3]

    rec = search_share(layers, log_eps=-10.0, dtype=torch.float32, bench=bench)
    assert ran == ["AcpPlan", "Tensor", "NoneType"] * len(layers)  # search, forward, forward + backward
    assert rec["search_ms"] == [1.0, 1.0] and rec["forward_ms"] == [4.0, 4.0] and rec["fwd_bwd_ms"] == [10.0, 10.0]
    assert rec["share_forward"] == [0.25, 0.25] and rec["total_share_fwd_bwd"] == pytest.approx(0.1)
