"""ACP: pruning happens, stays within the proven bound, and the boundaries match a brute-force search."""

import math

import pytest
import torch

import foxacp
from foxacp.ops import make_plan
from foxacp.testing import make_inputs, rel_err

FAST = dict(gate_mean=-1.0, gate_spread=1.0)  # log f around -1.3 per token: short effective windows


def _row_err_bound(o_acp, o_exact, v, log_eps, group):
    """Max over rows of ||o_acp - o_exact|| and the bound 2 * eps * max_j ||v_j|| (per batch, head)."""
    diff = (o_acp.double() - o_exact.double()).norm(dim=-1)  # (B, T, Hq)
    vmax = v.double().norm(dim=-1).amax(dim=1).repeat_interleave(group, dim=1)  # (B, Hq)
    return (diff / (2 * math.exp(log_eps) * vmax[:, None, :])).max().item()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fast_forgetting_prunes_most_tiles_within_bound(backend):
    q, k, v, g = make_inputs(
        2, 700, 700, 4, 2, 32, dtype=torch.float64 if backend == "torch" else torch.float32, **FAST
    )
    o, stats = foxacp.forgetting_attention(q, k, v, g, backend=backend, return_stats=True)
    exact = foxacp.forgetting_attention(q.double(), k.double(), v.double(), g, backend="reference", log_eps=None)
    assert stats.flop_saving > 0.5 and stats["flop_saving"] == stats.flop_saving
    assert (stats.tiles_visited < stats.tiles_causal).all()
    # The bound holds up to rounding (fp32 kernels add ~1e-6 relative).
    assert _row_err_bound(o, exact, v, -10.0, 2) < 1.0 + (0.0 if backend == "torch" else 0.1)


def test_loose_tolerance_bound_holds_and_is_not_vacuous():
    q, k, v, g = make_inputs(2, 600, 600, 4, 4, 32, dtype=torch.float64, gate_mean=1.0, gate_spread=2.0)
    o, stats = foxacp.forgetting_attention(q, k, v, g, backend="torch", log_eps=-3.0, return_stats=True)
    exact = foxacp.forgetting_attention(q, k, v, g, backend="reference", log_eps=None)
    ratio = _row_err_bound(o, exact, v, -3.0, 1)
    assert stats.flop_saving > 0.2
    assert 0.0 < ratio <= 1.0  # something was dropped, and no more than the bound allows


def test_given_qk_bound_is_used():
    q, k, v, g = make_inputs(1, 500, 500, 2, 2, 32, **FAST)
    data = make_plan(q, k, g)
    huge = make_plan(q, k, g, qk_bound=1e4)  # delta far below any decay here: nothing pruned
    tiny = make_plan(q, k, g, qk_bound=torch.tensor([0.0, 1e4]))  # per-head bound
    assert data.stats.flop_saving > 0
    assert huge.stats.flop_saving == 0.0
    assert tiny.stats.per_head_saving[0] >= data.stats.per_head_saving[0] > tiny.stats.per_head_saving[1] == 0
    # A bound of 0 is wrong for these inputs: the pruned function then differs from the exact one by more.
    _, st = foxacp.forgetting_attention(q, k, v, g, qk_bound=0.0, backend="torch", return_stats=True)
    assert st.flop_saving >= data.stats.flop_saving


def _brute_force_kv_lo(c, first_rows, tile_ends, delta):
    """kv_lo by scanning every tile: the first key tile whose max decay reaches delta."""
    out = []
    for r in first_rows:
        n = 0
        while n < len(tile_ends) and c[r] - c[tile_ends[n]] < delta:
            n += 1
        out.append(n)
    return out


def test_boundaries_match_brute_force_and_mirror():
    B, Tq, Tk, H = 2, 333, 450, 3
    q, k, v, g = make_inputs(B, Tq, Tk, H, H, 16, gate_mean=0.0)
    plan = make_plan(q, k, g, tile_m=32, tile_n=16)
    c = g.double().cumsum(1)
    u = q.float().norm(dim=-1).amax(1).double() * k.float().norm(dim=-1).amax(1).double() / 4.0
    delta = -2 * u - math.log(Tk) - 10.0
    ends = [min(e, Tk) - 1 for e in range(16, Tk + 16, 16)]
    rows = [m * 32 + Tk - Tq for m in range(math.ceil(Tq / 32))]
    for b in range(B):
        for h in range(H):
            want = _brute_force_kv_lo(c[b, :, h], rows, ends, delta[b, h].item())
            assert plan.kv_lo[b, h].tolist() == want
            mirror = [sum(1 for lo in want if lo <= n) for n in range(len(ends))]
            assert plan.q_hi[b, h].tolist() == mirror


@pytest.mark.parametrize("Tq", [450, 333])
def test_tiles_holding_causal_pairs_are_kept(Tq):
    """A causal tile whose first query sits at or before its last key is kept, however fast the gates forget
    (its largest decay is >= 0 > delta), and others are pruned here: dK/dV relies on the first to start its
    diagonal loop before reading Q_HI."""
    Tk, tm, tn = 450, 32, 16
    q, k, v, g = make_inputs(2, Tq, Tk, 3, 3, 16, gate_mean=-4.0, gate_spread=2.0)
    plan = make_plan(q, k, g, tile_m=tm, tile_n=tn)
    assert plan.stats.flop_saving > 0.5
    pruned = 0
    for m in range(math.ceil(Tq / tm)):
        first_pos, last_pos = m * tm + Tk - Tq, min(m * tm + tm, Tq) - 1 + Tk - Tq
        for n in range(last_pos // tn + 1):  # the causal key tiles of query tile m
            kept = (plan.kv_lo[:, :, m] <= n) & (plan.q_hi[:, :, n] > m)
            if first_pos <= min(n * tn + tn, Tk) - 1:
                assert kept.all()
            pruned += int((~kept).sum())
    assert pruned > 0


def test_stats_count_visited_tiles():
    q, k, v, g = make_inputs(1, 300, 300, 2, 2, 16, **FAST)
    plan = make_plan(q, k, g, tile_m=64, tile_n=64)
    causal = sum(math.ceil(min(i + 64, 300) / 64) for i in range(0, 300, 64))
    assert plan.stats.tiles_causal.tolist() == [causal, causal]
    visited = [
        sum(
            math.ceil(min(i + 64, 300) / 64) - lo
            for i, lo in zip(range(0, 300, 64), plan.kv_lo[0, h].tolist(), strict=True)
        )
        for h in range(2)
    ]
    assert plan.stats.tiles_visited.tolist() == visited


def test_exact_mode_stats_and_equality():
    q, k, v, g = make_inputs(1, 200, 200, 2, 2, 32)
    o, stats = foxacp.forgetting_attention(q, k, v, g, log_eps=None, backend="torch", return_stats=True)
    assert stats.flop_saving == 0.0
    ref = foxacp.forgetting_attention(q.double(), k.double(), v.double(), g, log_eps=None, backend="reference")
    assert rel_err(o, ref) < 1e-5


@pytest.mark.parametrize("shape", [(2, 333, 450, 3, 32, 16), (1, 700, 700, 2, 64, 64)])
def test_triton_plan_kernel_matches_torch_plan(shape):
    """The one-launch Triton boundary search finds exactly the boundaries of the searchsorted twin."""
    from foxacp.ops.acp import plan_tiles, qk_bound_from_data, threshold
    from foxacp.ops.gate import cumulative_gate
    from foxacp.ops.triton_plan import max_norms, tile_plan
    from foxacp.ops.validate import check_inputs

    B, Tq, Tk, H, tm, tn = shape
    for cu in (None, torch.tensor([0, 1, 150, 203, Tk], dtype=torch.int32) if B == 1 else None):
        q, k, v, g = make_inputs(B, Tq, Tk, H, H, 16, **FAST)
        if cu is not None:
            q = q[:, :Tk]
        problem = check_inputs(q, k, v, g, None, cu, None, -10.0, "torch")
        qp, kp = q.reshape(-1, H, 16), k.reshape(-1, H, 16)
        c_t = cumulative_gate(g.reshape(-1, H), problem.cu_k, problem.uniform, problem.num_seqs)
        delta = threshold(qk_bound_from_data(qp, kp, problem), problem, -10.0)
        want = plan_tiles(c_t, delta, problem, tm, tn)
        kv_lo, q_hi = tile_plan(c_t, delta, problem, tm, tn)
        assert torch.equal(kv_lo, want.kv_lo) and torch.equal(q_hi, want.q_hi)
        assert want.stats.flop_saving > 0.3
        norms = max_norms(qp, problem.cu_q, problem.num_seqs, problem.max_q)
        ref = torch.stack(
            [qp[a:b].norm(dim=-1).amax(0) for a, b in zip(problem.cu_q[:-1], problem.cu_q[1:], strict=True)]
        )
        assert torch.allclose(norms, ref, rtol=1e-6)


@pytest.mark.parametrize("packed", [False, True])
def test_threshold_from_a_float_bound_equals_the_tensor_formula(packed):
    """The cached constant for a float bound is bitwise the threshold the tensor path computes."""
    from foxacp.ops.acp import qk_bound_from_arg, threshold, threshold_from_arg
    from foxacp.ops.validate import check_inputs

    q, k, v, g = make_inputs(1 if packed else 3, 97, 97, 2, 2, 16)
    cu = torch.tensor([0, 40, 97], dtype=torch.int32) if packed else None
    problem = check_inputs(q, k, v, g, None, cu, None, -7.3, "torch")
    for bound in (0.0, 2.7, 11.3137):
        want = threshold(qk_bound_from_arg(bound, problem, q.device), problem, -7.3)
        got = threshold_from_arg(bound, problem, -7.3, q.device)
        assert got.dtype == torch.float64 and torch.equal(got, want)
        assert torch.equal(threshold_from_arg(torch.tensor(bound, dtype=torch.float64), problem, -7.3, q.device), want)
