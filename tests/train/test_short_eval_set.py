"""A held-out split shorter than the validation set asked for gives the same set (all its windows) for every
micro-batch size and world size (a resume may change both)."""

from __future__ import annotations

import torch

from foxacp.data import IGNORE_INDEX
from foxacp.train.distributed import Dist
from foxacp.train.loop import make_data

ONE = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), distributed=False)


def _eval_targets(cfg) -> torch.Tensor:
    """The label rows the validation set scores (those not wholly ignored), in order."""
    _, _, val = make_data(cfg, ONE)
    labels = torch.cat([b["labels"] for b in val])
    return labels[(labels != IGNORE_INDEX).any(dim=1)]


def test_a_short_held_out_split_gives_the_same_eval_set_for_every_micro_batch_size(small_config):
    # 1000 * 8 windows asked for: more than the held-out split has. A row length where the split's window count is
    # not a multiple of 8 (found by trying a few, so that the test does not depend on this Python's stdlib files).
    for seq_len in range(60, 80):
        common = (f"seq_len={seq_len}", f"global_batch_tokens={8 * seq_len}", "eval_every=1", "eval_batches=1000")
        one = _eval_targets(small_config(*common, "micro_batch_size=1"))
        if one.shape[0] % 8:
            break
    else:
        raise AssertionError("no row length in 60..79 gives a held-out window count off the multiples of 8")
    assert one.shape[0] < 1000 * 8  # the split is shorter than the set asked for
    eight = _eval_targets(small_config(*common, "micro_batch_size=8"))
    assert one.shape == eight.shape, f"{one.shape[0]} windows with micro_batch_size=1, {eight.shape[0]} with 8"
    assert torch.equal(one, eight)
