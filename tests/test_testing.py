"""foxacp.testing: the error measure and the float64 reference that tests and benchmarks share."""

import math

import pytest
import torch

from foxacp.testing import float64_reference, make_inputs, rel_err, run_fwd_bwd


def test_rel_err_nan_never_passes():
    b = torch.ones(4)
    assert rel_err(b, b) == 0.0
    assert rel_err(torch.tensor([1.0, 1.0, 1.0, float("nan")]), b) == math.inf
    assert rel_err(b, torch.tensor([1.0, 1.0, 1.0, float("inf")])) == math.inf
    assert rel_err(b * 1.01, b) == pytest.approx(0.01)


def test_make_inputs_shapes_and_seed():
    q, k, v, g = make_inputs(2, 5, 7, 4, 2, 16, dtype=torch.bfloat16, seed=3)
    assert q.shape == (2, 5, 4, 16) and k.shape == v.shape == (2, 7, 2, 16) and g.shape == (2, 7, 4)
    assert q.dtype == torch.bfloat16 and g.dtype == torch.float32 and bool((g < 0).all())
    assert all(
        torch.equal(a, b)
        for a, b in zip(make_inputs(2, 5, 7, 4, 2, 16, seed=3), make_inputs(2, 5, 7, 4, 2, 16, seed=3), strict=True)
    )


def test_float64_reference_is_float64_and_matches_the_float32_path():
    inputs = make_inputs(1, 33, 33, 2, 1, 16, seed=0)
    o, grads, do = run_fwd_bwd(inputs, backend="reference", log_eps=None)
    o_ref, grads_ref = float64_reference(inputs, do, log_eps=None)
    assert o_ref.dtype == torch.float64 and grads_ref[0].dtype == torch.float64
    assert rel_err(o, o_ref) < 1e-5
    assert all(rel_err(a, b) < 1e-4 for a, b in zip(grads, grads_ref, strict=True))
