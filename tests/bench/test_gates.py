"""The synthetic gate profile, recorded-gate loading, and the ACP saving the profile gives."""

import math

import pytest
import torch

from foxacp.bench.gates import GateProfile, fit_log_fgate, load_log_fgate, synthetic_log_fgate


def test_profile_is_valid_log_gates():
    g = synthetic_log_fgate(2, 4096, 12)
    assert g.dtype == torch.float32 and g.shape == (2, 4096, 12)
    assert bool(torch.isfinite(g).all()) and bool((g < 0).all())
    assert torch.equal(g, synthetic_log_fgate(2, 4096, 12))  # deterministic per seed
    assert not torch.equal(g, synthetic_log_fgate(2, 4096, 12, seed=1))


def test_per_head_rates_are_log_uniform():
    profile, heads, seqlen = GateProfile(), 12, 4096
    windows = profile.windows(heads, seqlen)
    assert windows[0].item() == pytest.approx(16.0)
    assert windows[-1].item() == pytest.approx(4 * seqlen)  # beyond the context
    steps = windows.log().diff()
    assert torch.allclose(steps, steps[0].expand_as(steps))  # equal ratios: log-uniform spread
    # The empirical mean rate of every head matches its nominal rate (the noise keeps the mean).
    g = synthetic_log_fgate(4, seqlen, heads, profile).double()
    assert torch.allclose(-g.mean((0, 1)), profile.rates(heads, seqlen), rtol=0.02)
    # Decay over one window is window_decay nats.
    assert torch.allclose(profile.rates(heads, seqlen) * windows, torch.full((heads,), 34.0).double())


@pytest.mark.parametrize("heads,head_dim", [(24, 64), (12, 128)])
def test_profile_gives_documented_acp_saving(heads, head_dim):
    acp = pytest.importorskip("foxacp.ops")
    from foxacp.bench.attention import make_inputs
    from foxacp.bench.peers import TILE, qknorm_bound

    savings = []
    for seqlen in (4096, 8192, 16384):
        g = synthetic_log_fgate(1, seqlen, heads)
        inp = make_inputs(
            1, seqlen, heads, head_dim, g, qk_bound=qknorm_bound(head_dim), log_eps=-10.0, device=torch.device("cpu")
        )
        plan = acp.make_plan(
            inp.q.detach(), inp.k.detach(), g, log_eps=-10.0, qk_bound=inp.qk_bound, tile_m=TILE, tile_n=TILE
        )
        savings.append(plan.stats.flop_saving)
        # The data-derived bound equals sqrt(D) on unit-RMS rows (up to bf16 rounding): same tiles.
        data = acp.make_plan(inp.q.detach(), inp.k.detach(), g, log_eps=-10.0, tile_m=TILE, tile_n=TILE)
        assert data.stats.flop_saving == pytest.approx(plan.stats.flop_saving, abs=0.01)
    assert all(0.49 <= s <= 0.65 for s in savings), savings
    assert savings == sorted(savings)  # more pruning at longer context


def test_fit_tiles_and_crops():
    g = -torch.rand(2, 5, 3)
    out = fit_log_fgate(g, 3, 12, 2)
    assert out.shape == (3, 12, 2) and out.dtype == torch.float32 and out.is_contiguous()
    assert torch.equal(out[0, :5], g[0, :, :2])
    assert torch.equal(out[0, 5:10], g[0, :, :2])  # time repeats
    assert torch.equal(out[2], out[0])  # batch repeats
    assert torch.equal(fit_log_fgate(g, 1, 4, 3), g[:1, :4])


def test_load_pt_layers_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    gates = -torch.rand(3, 2, 16, 4)
    torch.save(gates, tmp_path / "g.pt")
    assert torch.equal(load_log_fgate(tmp_path / "g.pt"), gates[0])
    assert torch.equal(load_log_fgate(tmp_path / "g.pt", layer=-1), gates[2])
    with pytest.raises(ValueError, match="layer"):
        load_log_fgate(tmp_path / "g.pt", layer=3)
    torch.save({"log_fgate": gates[1], "step": torch.tensor(3)}, tmp_path / "d.pt")
    assert torch.equal(load_log_fgate(tmp_path / "d.pt"), gates[1])
    save_file({"x": gates[1].contiguous()}, str(tmp_path / "g.safetensors"))
    assert torch.equal(load_log_fgate(tmp_path / "g.safetensors"), gates[1])


def test_load_rejects_bad_gates(tmp_path):
    torch.save(torch.rand(2, 8, 4), tmp_path / "pos.pt")
    with pytest.raises(ValueError, match="<= 0"):
        load_log_fgate(tmp_path / "pos.pt")
    torch.save(-torch.rand(8, 4), tmp_path / "rank.pt")
    with pytest.raises(ValueError, match="expected"):
        load_log_fgate(tmp_path / "rank.pt")
    torch.save(torch.full((1, 4, 2), -math.inf), tmp_path / "inf.pt")
    with pytest.raises(ValueError, match="finite"):
        load_log_fgate(tmp_path / "inf.pt")
