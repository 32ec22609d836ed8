"""ops/custom_ops.py: the training op's fake gives the ACP plan's tables the shapes
(N, Hq, ceil(max_q / tile_m)) and (N, Hq, ceil(max_k / tile_n)). Every shipped config has square tiles, so a
fake that swaps tile_m and tile_n passes the existing opcheck; a config with tile_m != tile_n (which
KernelConfig and use_kernel_config accept) tells them apart."""

import pytest
import torch

from foxacp.ops.config import Blocks, KernelConfig
from foxacp.ops.custom_ops import attention_fwd_op
from foxacp.testing import make_inputs


@pytest.mark.parametrize("tiles", [(128, 64), (64, 128)])
def test_fake_plan_shapes_with_rectangular_tiles(tiles):
    q, k, v, g = make_inputs(1, 75, 75, 2, 1, 16, gate_mean=0.0, seed=5)
    cu = torch.tensor([0, 75], dtype=torch.int32)
    cfg = KernelConfig(*tiles, *[Blocks(64, 64)] * 3)
    args = [q, k, v, g, cu, cu, None, 2.0, -3.0, 0.25, 75, 75, True, cfg.to_ints()]
    real = attention_fwd_op(*args)
    kv_lo, q_hi = real[4], real[5]
    assert kv_lo.shape == (1, 2, -(-75 // tiles[0])) and q_hi.shape == (1, 2, -(-75 // tiles[1]))
    torch.library.opcheck(attention_fwd_op, args, test_utils=("test_faketensor",))
