"""Passkey rows mixed into training: what a replaced row holds, that the eval grid is never drawn, and that the
mixing is the same for any number of ranks and after a resume."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from foxacp.data import BatchLoader, ByteTokenizer, TokenSplit
from foxacp.eval.passkey import INSTRUCTION, NEEDLE, QUESTION
from foxacp.train import passkey_mix as pm
from foxacp.train.passkey_mix import PasskeyMixer

TOK = ByteTokenizer()
T = 512


def _split(n: int = 40 * (T + 1)) -> TokenSplit:
    tokens = np.random.default_rng(0).integers(0, 256, n).astype(np.uint16)
    return TokenSplit(tokens, np.array([0, n // 2, n]))


def _loader(**kw) -> BatchLoader:
    return BatchLoader(_split(), T, 8, seed=3, **kw)


def test_fraction_zero_changes_nothing():
    a, b = _loader(), PasskeyMixer(_loader(), TOK, fraction=0.0, seed=3)
    for _ in range(3):
        x, y = next(a), next(b)
        assert x["input_ids"].equal(y["input_ids"]) and x["labels"].equal(y["labels"])


def test_replaced_rows_hold_a_prompt_the_answer_and_the_original_row():
    plain, mixed = _loader(), PasskeyMixer(_loader(), TOK, fraction=0.5, seed=3)
    replaced = 0
    for _ in range(5):
        p, m = next(plain), next(mixed)
        assert m["labels"][:, :-1].equal(m["input_ids"][:, 1:])  # labels are still the next tokens
        for row_p, row_m, lab_p in zip(p["input_ids"], m["input_ids"], p["labels"], strict=True):
            if row_p.equal(row_m):
                continue
            replaced += 1
            text = TOK.decode(row_m.tolist())
            assert text.startswith(INSTRUCTION)
            key = text.split(NEEDLE.split("{key}")[0], 1)[1][:5]
            assert key.isdigit() and NEEDLE.format(key=key) in text
            head = text.index(QUESTION) + len(QUESTION)
            assert text[head:].startswith(f" {key}.")
            length = len(TOK.encode(text[:head]))
            assert length % pm.HELD_OUT_LENGTH_MULTIPLE != 0
            ids = row_m.tolist()
            eos = ids.index(TOK.eos_id)
            assert eos == length + len(f" {key}.")
            # After EOS the row goes on with the original row's first tokens.
            original = [*row_p.tolist(), int(lab_p[-1])]
            assert ids[eos + 1 :] == original[: T - eos - 1]
    assert 5 <= replaced <= 35  # about half of 40 rows


def test_off_grid_draws_avoid_the_eval_grid():
    rng = random.Random(0)
    lengths = [pm.off_grid_length(rng, 200, 1100) for _ in range(2000)]
    assert min(lengths) >= 200 and max(lengths) <= 1100 and len(set(lengths)) > 500
    assert all(n % 256 for n in lengths)
    depths = [pm.off_grid_depth(rng) for _ in range(2000)]
    assert min(depths) >= 0 and max(depths) <= 1 and len(set(depths)) > 500
    assert not {0.0, 0.25, 0.5, 0.75, 1.0, 0.125} & set(depths)
    with pytest.raises(ValueError, match="no passkey length"):
        pm.off_grid_length(rng, 512, 512)
    assert pm.off_grid_length(rng, 512, 513) == 513


def test_ranks_together_see_the_world_size_one_batch_and_resume_continues():
    whole = PasskeyMixer(_loader(), TOK, fraction=0.3, seed=3)
    halves = [PasskeyMixer(_loader(rank=r, world_size=2), TOK, fraction=0.3, seed=3) for r in range(2)]
    plain, changed = _loader(), 0
    for _ in range(3):
        full = next(whole)
        parts = [next(h) for h in halves]
        assert full["input_ids"].equal(torch.cat([p["input_ids"] for p in parts]))
        changed += int((full["input_ids"] != next(plain)["input_ids"]).any(-1).sum())
    assert changed > 0
    state = whole.state_dict()
    expected = next(whole)
    resumed = PasskeyMixer(_loader(), TOK, fraction=0.3, seed=3)
    resumed.load_state_dict(state)
    assert next(resumed)["input_ids"].equal(expected["input_ids"])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="fraction"):
        PasskeyMixer(_loader(), TOK, fraction=1.0, seed=0)
    with pytest.raises(ValueError, match="pack=false"):
        PasskeyMixer(_loader(packing=True), TOK, fraction=0.1, seed=0)
    with pytest.raises(ValueError, match="too short"):
        PasskeyMixer(BatchLoader(_split(), 64, 8), TOK, fraction=0.1, seed=0)
