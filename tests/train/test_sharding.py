"""Data parallelism: two ranks' batches (passkey rows mixed in) concatenate to the one-rank batch, step for step and
across an epoch boundary, so no window is seen twice or skipped by a rank."""

from __future__ import annotations

import torch

from foxacp.data.batches import BatchLoader
from foxacp.data.pipeline import prepare_data
from foxacp.train.passkey_mix import PasskeyMixer


def test_two_ranks_see_the_one_rank_batches_across_an_epoch(corpus_dir, cache_dir):
    tok, cache = prepare_data(str(corpus_dir), "byte", cache_dir, progress=False)

    def loaders(world_size):
        return [
            PasskeyMixer(
                BatchLoader(cache.train, 512, 8, seed=3, rank=r, world_size=world_size), tok, fraction=0.5, seed=3
            )
            for r in range(world_size)
        ]

    (one,), two = loaders(1), loaders(2)
    steps = one.loader.steps_per_epoch + 2  # into the second epoch
    epoch = []
    for step in range(steps):
        a = next(one)
        parts = [next(loader) for loader in two]
        for key in ("input_ids", "labels"):
            assert torch.equal(a[key], torch.cat([p[key] for p in parts])), (step, key)
        if step < one.loader.steps_per_epoch:
            epoch.append(a)
    assert one.loader.epoch == 1 and all(loader.loader.epoch == 1 for loader in two)
