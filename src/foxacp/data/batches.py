"""Training windows and batches (the batch contract is in docs/architecture.md, "Batches").

Window i of a split is tokens[i*T : i*T + T + 1]: its first T tokens are the inputs and its last
T the labels, so a document's last position predicts its EOS. Windows cross document boundaries.

With packing, every window row is cut into segments at document starts (the EOS ends its
document's segment) and `cu_seqlens` lists the segment offsets over the flattened B*T tokens, row
ends included. The EOS position's target is the next document's first token, which lies in
another segment, so its label is -100: no position predicts across a boundary. Without packing,
attention runs over the whole window and every label is the true next token.

Data parallelism: each step takes the next `batch_size` windows (the global batch) of the epoch's
seeded permutation and rank r keeps rows [r*B/W, (r+1)*B/W). Concatenating the ranks' batches in
rank order gives the world-size-1 batch, so runs on any number of GPUs see the same data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from foxacp.data.cache import TokenSplit

IGNORE_INDEX = -100
Batch = dict[str, torch.Tensor | int]


def num_windows(split: TokenSplit, seq_len: int) -> int:
    """How many windows of `seq_len` inputs (plus one label token) fit in the split."""
    return max(split.num_tokens - 1, 0) // seq_len


def make_batch(split: TokenSplit, windows: np.ndarray, seq_len: int, packing: bool) -> Batch:
    """The batch of the given window indices.

    Args:
        split: the tokens.
        windows: (B,) window indices, each < num_windows(split, seq_len).
        seq_len: T.
        packing: add "cu_seqlens" (int32 (N+1,)) and "max_seqlen" (int) and mask the labels
            that would cross a document boundary.

    Returns:
        {"input_ids": int64 (B, T), "labels": int64 (B, T)[, "cu_seqlens", "max_seqlen"]}.
    """
    starts = np.asarray(windows, dtype=np.int64) * seq_len
    rows = np.stack([np.asarray(split.tokens[s : s + seq_len + 1], dtype=np.int64) for s in starts])
    input_ids = torch.from_numpy(rows[:, :-1].copy())
    labels = torch.from_numpy(rows[:, 1:].copy())
    if not packing:
        return {"input_ids": input_ids, "labels": labels}
    cuts = [0]
    for b, s in enumerate(starts):
        # Document starts d with s < d <= s + T: position d - s - 1 would predict a new document.
        lo, hi = np.searchsorted(split.offsets, [s, s + seq_len], side="right")
        rel = split.offsets[lo:hi] - s
        labels[b, torch.as_tensor(rel - 1)] = IGNORE_INDEX
        cuts += [b * seq_len + int(p) for p in rel if p < seq_len] + [(b + 1) * seq_len]
    cu_seqlens = torch.tensor(cuts, dtype=torch.int32)
    max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    return {
        "input_ids": input_ids,
        "labels": labels,
        "cu_seqlens": cu_seqlens,
        "max_seqlen": max_seqlen,
    }


def _local_rows(batch_size: int, rank: int, world_size: int) -> slice:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if batch_size < 1 or batch_size % world_size:
        raise ValueError(f"global batch_size {batch_size} must be a positive multiple of world_size {world_size}")
    local = batch_size // world_size
    return slice(rank * local, (rank + 1) * local)


class BatchLoader:
    """An infinite, seeded, resumable iterator over shuffled training batches of one rank.

    Each epoch visits `steps_per_epoch` global batches of `batch_size` windows in the order of
    `np.random.default_rng([seed, epoch]).permutation(num_windows)` (the leftover windows are
    skipped that epoch). `next()` returns this rank's `batch_size // world_size` rows of the next
    global batch.
    """

    def __init__(
        self,
        split: TokenSplit,
        seq_len: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        packing: bool = False,
    ) -> None:
        """
        Args:
            split: training tokens.
            seq_len: T, tokens per row.
            batch_size: the global batch size (rows per step summed over all ranks).
            seed: shuffling seed.
            rank, world_size: this process's data-parallel shard.
            packing: see make_batch.

        Raises:
            ValueError: seq_len < 1, a batch_size that is not a multiple of world_size, a bad rank,
                or fewer windows in the split than one global batch.
        """
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.rows = _local_rows(batch_size, rank, world_size)
        self.split, self.seq_len, self.batch_size = split, seq_len, batch_size
        self.seed, self.packing = seed, packing
        self.num_windows = num_windows(split, seq_len)
        self.steps_per_epoch = self.num_windows // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the training split has {split.num_tokens} tokens: fewer than one global batch of "
                f"{batch_size} windows of {seq_len} + 1 tokens"
            )
        self.epoch, self.step = 0, 0
        self._order_epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def __iter__(self) -> BatchLoader:
        return self

    def __next__(self) -> Batch:
        if self._order_epoch != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._order, self._order_epoch = rng.permutation(self.num_windows), self.epoch
        lo = self.step * self.batch_size
        windows = self._order[lo : lo + self.batch_size][self.rows]
        self.step += 1
        if self.step == self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        return make_batch(self.split, windows, self.seq_len, self.packing)

    def state_dict(self) -> dict[str, Any]:
        """The position in the data stream (independent of rank and world_size), and the data's identity
        (``TokenSplit.sha1``, None when unknown)."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "num_windows": self.num_windows,
            "data_sha1": self.split.sha1,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from `state_dict()`; the next batch is the one an uninterrupted run would return.

        Raises:
            ValueError: when seed, batch_size, seq_len or num_windows differ, or the data does (its token file's
                SHA-1, where both know it): another stream.
        """
        for key in ("seed", "batch_size", "seq_len", "num_windows"):
            if state[key] != getattr(self, key):
                raise ValueError(f"loader state has {key}={state[key]}, this loader {getattr(self, key)}")
        saved = state.get("data_sha1")
        if saved and self.split.sha1 and saved != self.split.sha1:
            raise ValueError(f"loader state is of data {saved[:12]}, this loader's tokens are {self.split.sha1[:12]}")
        if not 0 <= state["step"] < self.steps_per_epoch:
            raise ValueError(f"loader state step {state['step']} is outside [0, {self.steps_per_epoch})")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])


def validation_batches(
    split: TokenSplit,
    seq_len: int,
    batch_size: int,
    num_batches: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    packing: bool = False,
) -> list[Batch]:
    """The fixed validation set: the first `num_batches * batch_size` windows of the held-out split
    in order, this rank's rows of each global batch. When the split is short, the set is all its windows: the
    last batch is filled up with rows whose labels are all IGNORE_INDEX, so that the set does not depend on the
    batch size (a resume may change it).

    Raises:
        ValueError: when the held-out split holds no window of seq_len + 1 tokens, or on a bad
            batch_size / rank / world_size / num_batches.
    """
    rows = _local_rows(batch_size, rank, world_size)
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    n = num_windows(split, seq_len)
    if n == 0:
        raise ValueError(
            f"the held-out split has {split.num_tokens} tokens: not one window of {seq_len} + 1 tokens; use a "
            "shorter context or a larger corpus"
        )
    out = []
    for i in range(min(num_batches, -(-n // batch_size))):
        index = np.arange(i * batch_size, (i + 1) * batch_size)[rows]
        batch = make_batch(split, np.minimum(index, n - 1), seq_len, packing)  # past the split: a scored-nothing row
        batch["labels"][torch.from_numpy(index >= n)] = IGNORE_INDEX
        out.append(batch)
    return out
