"""Passkey prompts and scoring, on fake answerers that are always right or always wrong (no model)."""

from __future__ import annotations

import re

import pytest

from foxacp.data import ByteTokenizer
from foxacp.eval.passkey import (
    FILLER,
    accuracy_grid,
    fixed_tokens,
    make_prompt,
    passkey_trials,
    run_passkey,
    score_answer,
)

TOK = ByteTokenizer()


def _key_in(prompt: list[int]) -> str:
    return re.search(r"pass key is (\d+)\.", TOK.decode(prompt)).group(1)


def test_score_answer_takes_the_first_number_exactly():
    assert score_answer(" 12345.", "12345")
    assert score_answer("12345 is it", "12345")
    assert not score_answer(" 123456", "12345")  # a longer number is wrong
    assert not score_answer(" 1234", "12345")
    assert not score_answer(" 54321 12345", "12345")  # only the first number counts
    assert not score_answer("no digits", "12345")


@pytest.mark.parametrize("depth", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("length", [fixed_tokens(TOK, 5), 301, 777])
def test_prompt_has_the_exact_length_and_the_key_at_its_depth(length, depth):
    ids = make_prompt(TOK, FILLER, "48151", length, depth)
    assert len(ids) == length
    text = TOK.decode(ids)
    assert text.count("48151") == 2 and text.endswith("The pass key is")
    room = length - fixed_tokens(TOK, 5)
    start = text.index(" The pass key is 48151")
    assert start - len(TOK.encode(text[: text.index("memorize it. ") + len("memorize it. ")])) == round(depth * room)
    with pytest.raises(ValueError, match="too short"):
        make_prompt(TOK, FILLER, "48151", fixed_tokens(TOK, 5) - 1, depth)


def test_trials_are_deterministic_under_the_seed_and_keys_have_the_digits():
    a = passkey_trials(TOK, lengths=[300, 400], depths=[0, 0.5, 1], trials=3, seed=7, digits=6)
    b = passkey_trials(TOK, lengths=[300, 400], depths=[0, 0.5, 1], trials=3, seed=7, digits=6)
    c = passkey_trials(TOK, lengths=[300, 400], depths=[0, 0.5, 1], trials=3, seed=8, digits=6)
    assert a == b and [t.key for t in a] != [t.key for t in c]
    assert len(a) == 18 and all(len(t.key) == 6 and t.key[0] != "0" for t in a)
    assert all(_key_in(t.prompt) == t.key and len(t.prompt) == t.length for t in a)
    for bad, match in [({"depths": [1.5]}, "depths"), ({"lengths": []}, "empty"), ({"trials": 0}, "trials")]:
        args = {"lengths": [300], "depths": [0.5], "trials": 1, "seed": 0, **bad}
        with pytest.raises(ValueError, match=match):
            passkey_trials(TOK, **args)


def test_accuracy_of_fake_answerers_right_wrong_and_half():
    ts = passkey_trials(TOK, lengths=[500, 300], depths=[1.0, 0.0], trials=4, seed=3)
    right = run_passkey(lambda ts: [f" {_key_in(t.prompt)}." for t in ts], ts)
    wrong = run_passkey(lambda ts: [f" {int(_key_in(t.prompt)) + 1}." for t in ts], ts)
    assert right["lengths"] == [300, 500] and right["depths"] == [0.0, 1.0]
    assert right["accuracy"] == [[1.0, 1.0], [1.0, 1.0]] and right["overall"] == 1.0
    assert wrong["accuracy"] == [[0.0, 0.0], [0.0, 0.0]] and wrong["overall"] == 0.0
    # Right only at depth 0 of the longer prompts: one cell at 1, the rest at 0.
    picky = run_passkey(lambda ts: [_key_in(t.prompt) if (t.length, t.depth) == (500, 0.0) else "x" for t in ts], ts)
    assert picky["accuracy"] == [[0.0, 0.0], [1.0, 0.0]] and picky["overall"] == 0.25
    assert right["trials"][0]["correct"] and not wrong["trials"][0]["correct"]
    assert {"length", "depth", "key", "answer", "correct"} == set(right["trials"][0])


def test_accuracy_grid_refuses_mismatched_answers():
    ts = passkey_trials(TOK, lengths=[300], depths=[0.5], trials=2, seed=0)
    with pytest.raises(ValueError, match="answers"):
        accuracy_grid(ts, ["1"])
    with pytest.raises(ValueError, match="answers"):
        accuracy_grid([], [])
