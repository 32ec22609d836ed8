"""Synthetic passkey rows mixed into training (TrainConfig.passkey_fraction), so that a small model can learn the
retrieval that ``foxacp eval`` measures.

Each training row of each step is replaced, with probability ``fraction``, by a passkey prompt of
:mod:`foxacp.eval.passkey` (instruction, filler, the key sentence at some depth, the question), the answer
" KEY." and EOS, followed by the start of the row it replaces. The prompt's length and the key's depth are drawn
off the grid that the evaluation uses: a length is never a multiple of HELD_OUT_LENGTH_MULTIPLE (the eval's default
lengths, powers-of-two fractions of a power-of-two context, are) and a depth never a multiple of
HELD_OUT_DEPTH_STEP (the eval's default depths 0, 0.25, ..., 1 are), so the evaluated (length, depth) cells are never
trained on; lengths beyond the context cannot be.

Which rows are replaced and what they hold depend only on (seed, epoch, step, global row), so the data are the same
on any number of devices and after a resume (the state is the wrapped loader's).
"""

from __future__ import annotations

import random

import numpy as np
import torch

from foxacp.data import Batch, BatchLoader, Tokenizer
from foxacp.eval.passkey import FILLER, fixed_tokens, make_prompt

HELD_OUT_LENGTH_MULTIPLE = 256
HELD_OUT_DEPTH_STEP = 0.125
DEPTH_RESOLUTION = 1000  # depths are drawn in thousandths
_STREAM = 0x9A55  # keeps these draws apart from any other use of the run's seed


def off_grid_length(rng: random.Random, low: int, high: int) -> int:
    """A uniform length in [low, high] that is not a multiple of HELD_OUT_LENGTH_MULTIPLE.

    Raises ValueError when there is none."""
    if high < low or (low == high and low % HELD_OUT_LENGTH_MULTIPLE == 0):
        raise ValueError(f"no passkey length in [{low}, {high}] off the multiples of {HELD_OUT_LENGTH_MULTIPLE}")
    while (n := rng.randint(low, high)) % HELD_OUT_LENGTH_MULTIPLE == 0:
        pass
    return n


def off_grid_depth(rng: random.Random) -> float:
    """A uniform depth in [0, 1] in thousandths that is not a multiple of HELD_OUT_DEPTH_STEP."""
    step = round(HELD_OUT_DEPTH_STEP * DEPTH_RESOLUTION)
    while (k := rng.randint(0, DEPTH_RESOLUTION)) % step == 0:
        pass
    return k / DEPTH_RESOLUTION


def passkey_row(
    tokenizer: Tokenizer, rng: random.Random, row: np.ndarray, *, min_len: int, digits: int, filler: str = FILLER
) -> np.ndarray:
    """``row`` (T + 1 token ids) with its start replaced by a passkey prompt of off-grid length and depth, the answer
    " KEY." and EOS; the rest of ``row`` follows. Returns the new (T + 1,) row, of ``row``'s dtype."""
    key = str(rng.randrange(10 ** (digits - 1), 10**digits))
    answer = [*tokenizer.encode(f" {key}."), tokenizer.eos_id]
    length = off_grid_length(rng, min_len, len(row) - len(answer))
    prompt = make_prompt(tokenizer, filler, key, length, off_grid_depth(rng))
    head = np.asarray(prompt + answer, dtype=row.dtype)
    return np.concatenate([head, row[: len(row) - len(head)]])


class PasskeyMixer:
    """A BatchLoader whose rows are replaced by passkey rows with probability ``fraction`` (see the module
    docstring). Iterates like the loader; ``state_dict``/``load_state_dict`` are the loader's."""

    def __init__(
        self, loader: BatchLoader, tokenizer: Tokenizer, *, fraction: float, seed: int, digits: int = 5
    ) -> None:
        """Raises ValueError for a fraction outside [0, 1), a packing loader (a passkey row is one sequence), or a
        context too short for a prompt with as much filler as fixed text."""
        if not 0 <= fraction < 1:
            raise ValueError(f"passkey fraction must be in [0, 1), got {fraction!r}")
        if loader.packing:
            raise ValueError("passkey mixing needs pack=false (a passkey row is one sequence)")
        self.min_len = 2 * fixed_tokens(tokenizer, digits)
        if self.min_len + digits + 3 > loader.seq_len:
            raise ValueError(f"seq_len {loader.seq_len} is too short for passkey rows of >= {self.min_len} tokens")
        self.loader, self.tokenizer = loader, tokenizer
        self.fraction, self.seed, self.digits = fraction, seed, digits

    def __iter__(self) -> PasskeyMixer:
        return self

    def __next__(self) -> Batch:
        epoch, step = self.loader.epoch, self.loader.step
        batch = next(self.loader)
        chosen = np.random.default_rng([self.seed, _STREAM, epoch, step]).random(self.loader.batch_size)
        rows = self.loader.rows
        ids, labels = batch["input_ids"], batch["labels"]
        for i in np.flatnonzero(chosen[rows] < self.fraction):
            rng = random.Random(f"{self.seed}-{_STREAM}-{epoch}-{step}-{rows.start + i}")
            row = torch.cat([ids[i], labels[i, -1:]]).numpy()
            new = torch.from_numpy(passkey_row(self.tokenizer, rng, row, min_len=self.min_len, digits=self.digits))
            ids[i], labels[i] = new[:-1], new[1:]
        return batch

    def state_dict(self) -> dict[str, int]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.loader.load_state_dict(state)
