"""Variant: v_early's dK/dV and dQ in one key loop, the diagonal mask behind a branch (notes #34)."""

import v_op


def triton_attention(*args, **kwargs):
    v_op.FLAGS.clear()
    v_op.FLAGS.update(DQ=dict(ONE=True), DKDV=dict(EARLY=True))
    return v_op.triton_attention(*args, **kwargs)
