"""forgetting_attention_with_kvcache with the data-derived bound (qk_bound=None) and a NaN in q or in a cached key:
both backends compute the same function, and rows that do not see the NaN stay exact (no bound: nothing pruned, as
the training op's qk_bound_from_data gives). The PyTorch twin once pruned every block there (a NaN threshold), the
query's own included, so every row was NaN. NumPy scalars are taken as the floats they are."""

from __future__ import annotations

import math

import pytest
import torch

import foxacp
from tests.ops.test_kvcache import dense_float64, make_cache


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("where", ["query", "key"])
def test_nan_leaves_other_rows_exact(backend, where):
    q, k, v, c, lens, _ = make_cache(1, 4, 130, 2, 2, 16, [130], gate_mean=-1.0)
    if where == "query":
        q[0, 3, 0, 0] = math.nan  # the last query of head 0
        nan_rows = [[3, 0]]
    else:
        k[0, 128, 0, 0] = math.nan  # the key of query 2 (position 128), KV head 0
        nan_rows = [[2, 0], [3, 0]]
    ref = dense_float64(q, k, v, c, lens)
    assert torch.isnan(ref[0]).any(-1).nonzero().tolist() == nan_rows
    o = foxacp.forgetting_attention_with_kvcache(q, k, v, c, lens, backend=backend)  # log_eps=-10, bound from data
    assert torch.isnan(o[0]).any(-1).nonzero().tolist() == nan_rows
    finite = ~torch.isnan(ref)
    torch.testing.assert_close(o.double()[finite], ref[finite], atol=2e-5, rtol=1e-5)


def test_numpy_scalars_are_taken_as_floats():
    np = pytest.importorskip("numpy")
    q, k, v, c, lens, _ = make_cache(1, 2, 70, 2, 2, 16, [70], gate_mean=-1.0)
    plain = foxacp.forgetting_attention_with_kvcache(q, k, v, c, lens, sm_scale=0.25, qk_bound=2.0, backend="torch")
    numpy = foxacp.forgetting_attention_with_kvcache(
        q, k, v, c, lens, sm_scale=np.float32(0.25), qk_bound=np.float32(2.0), log_eps=np.float32(-10.0),
        backend="torch",
    )  # fmt: skip
    torch.testing.assert_close(numpy, plain, rtol=0, atol=0)
