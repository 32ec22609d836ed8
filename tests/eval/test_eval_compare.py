"""``foxacp eval --compare-exact``'s comparison numbers against an obviously-correct computation."""

from __future__ import annotations

import math

from foxacp.eval.report import compare


def _record(losses: list[float | None]) -> dict:
    scored = [v for v in losses if v is not None]
    passkey = {"overall": 1.0, "trials": [{"answer": "123"}]}
    return {
        "per_position": {"loss_by_position": losses, "loss": sum(scored) / len(scored)},
        "passkey": passkey,
    }


def _brute_max_abs(a: list[float | None], b: list[float | None]) -> float:
    """The largest |a - b|, where a NaN difference (a position where one run broke) counts as the largest."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            continue
        d = abs(x - y)
        if math.isnan(d):
            return math.nan
        worst = max(worst, d)
    return worst


def test_max_abs_loss_difference_does_not_hide_a_nan_position():
    # ACP broke at position 2 (NaN loss), exact did not: the largest difference must not read as 1e-6.
    pruned = [2.0, 2.000001, math.nan, 2.5]
    exact = [2.0, 2.0, 2.1, 2.5]
    got = compare(_record(pruned), _record(exact))["max_abs_loss_difference"]
    want = _brute_max_abs(pruned, exact)
    assert math.isnan(want)
    assert math.isnan(got) or got == math.inf, f"a NaN position is reported as max |difference| {got}"
