"""Variant: dK/dV's diagonal loop and dQ's masked loop start without waiting for the plan entry (notes #34)."""

import v_op


def triton_attention(*args, **kwargs):
    v_op.FLAGS.clear()
    v_op.FLAGS.update(DQ=dict(EARLY=True), DKDV=dict(EARLY=True))
    return v_op.triton_attention(*args, **kwargs)
