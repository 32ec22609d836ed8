"""Passkey retrieval: a random key hidden at a given depth of a filler haystack, scored by exact match.

    prompts = passkey_trials(tokenizer, lengths=[256, 1024], depths=[0, 0.5, 1], trials=4, seed=0)
    answers = greedy_answers(model, tokenizer, [t.prompt for t in prompts], digits=5)
    grid = accuracy_grid(prompts, answers, lengths, depths)

The prompt is the instruction, filler up to the key's depth, the key sentence, the rest of the filler, and the
question; its token count is the trial's length exactly (the filler is cut to fit). No judge: the answer is
right when the first run of digits in the model's continuation equals the key.

The pieces are encoded apart and joined as tokens, so that the length is exact and the key sentence is the same
tokens at every depth. With a subword tokenizer the joints are then not always how the prompt's text would
encode (a lone space token before "The" with a byte-level BPE); models trained with foxacp's passkey mix
(``train.passkey_mix``, which builds its rows here) see the same joints.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from foxacp.data import Tokenizer

FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
    "The river runs to the sea and the sea does not fill. "
)
INSTRUCTION = "There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it. "
NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = " What is the pass key? The pass key is"

_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class PasskeyTrial:
    """One prompt: ``prompt`` token ids (exactly ``length`` of them) hiding ``key`` at relative ``depth``."""

    length: int
    depth: float
    key: str
    prompt: list[int]


def score_answer(answer: str, key: str) -> bool:
    """True when the first run of digits in ``answer`` is exactly ``key`` (a longer or shorter number is wrong)."""
    found = _DIGITS.search(answer)
    return found is not None and found.group() == key


def _random_key(rng: random.Random, digits: int) -> str:
    return str(rng.randrange(10 ** (digits - 1), 10**digits))


def fixed_tokens(tokenizer: Tokenizer, digits: int) -> int:
    """Tokens of a prompt that are not filler (instruction, key sentence with a ``digits``-digit key, question)."""
    key = "9" * digits
    return sum(len(tokenizer.encode(t)) for t in (INSTRUCTION, NEEDLE.format(key=key), QUESTION))


def make_prompt(tokenizer: Tokenizer, filler: str, key: str, length: int, depth: float) -> list[int]:
    """Token ids (exactly ``length``) of the instruction, filler, the key sentence at ``depth`` (0: right after
    the instruction, 1: right before the question) of the filler, more filler, and the question.

    Raises ValueError when ``length`` cannot hold the instruction, key sentence and question, or the filler
    encodes to no tokens."""
    head = tokenizer.encode(INSTRUCTION)
    needle = tokenizer.encode(NEEDLE.format(key=key))
    tail = tokenizer.encode(QUESTION)
    room = length - len(head) - len(needle) - len(tail)
    if room < 0:
        raise ValueError(f"passkey length {length} is too short: the fixed text takes {length - room} tokens")
    unit = tokenizer.encode(filler)
    if not unit:
        raise ValueError("the passkey filler text encodes to no tokens")
    hay = (unit * (room // len(unit) + 1))[:room]
    cut = round(depth * room)
    return head + hay[:cut] + needle + hay[cut:] + tail


def passkey_trials(
    tokenizer: Tokenizer,
    *,
    lengths: Sequence[int],
    depths: Sequence[float],
    trials: int,
    seed: int,
    digits: int = 5,
    filler: str = FILLER,
) -> list[PasskeyTrial]:
    """``trials`` prompts per (length, depth), each with its own random ``digits``-digit key drawn from ``seed``
    (the same arguments give the same prompts).

    Raises ValueError for an empty ``lengths`` or ``depths``, a depth outside [0, 1], trials or digits < 1, or a
    length too short for the fixed text (see :func:`make_prompt`)."""
    if not lengths or not depths:
        raise ValueError("passkey lengths and depths must not be empty")
    if any(not 0 <= d <= 1 for d in depths):
        raise ValueError(f"passkey depths must lie in [0, 1], got {list(depths)}")
    if trials < 1 or digits < 1:
        raise ValueError(f"passkey trials and digits must be >= 1, got trials={trials}, digits={digits}")
    rng = random.Random(seed)
    out = []
    for length in lengths:
        for depth in depths:
            for _ in range(trials):
                key = _random_key(rng, digits)
                out.append(PasskeyTrial(length, float(depth), key, make_prompt(tokenizer, filler, key, length, depth)))
    return out


def greedy_answers(
    model: nn.Module,
    tokenizer: Tokenizer,
    trials: Sequence[PasskeyTrial],
    *,
    digits: int,
    batch_size: int = 8,
    progress: bool = True,
    evict: bool = False,
    memory: list[dict[str, Any]] | None = None,
) -> list[str]:
    """The model's greedy continuation (``digits`` + 4 tokens, decoded to text) of every trial's prompt, with
    ``foxacp.generate`` and its decoding cache (evicting with ``evict``), ``batch_size`` prompts at a time.

    With ``evict``, ``memory`` (a list) receives for each batch {"prompts", "lengths", "fraction_held"}: the
    share of a full cache the evicting cache held at the end (so a comparison shows that eviction freed blocks)."""
    from foxacp.infer import generate

    answers: list[str] = []
    bar = tqdm(total=len(trials), desc="passkey", unit="prompt", disable=not progress)
    for start in range(0, len(trials), batch_size):
        batch = [t.prompt for t in trials[start : start + batch_size]]
        # A pool as large as a full cache: the comparison is about answers, and a model that forgets slowly
        # would exhaust the default (half) pool.
        report: dict[str, Any] = {}
        pool = {"evict": True, "pool_fraction": 1.0, "memory_report": report} if evict else {}
        outs = generate(model, batch, digits + 4, temperature=0.0, eos_token_id=tokenizer.eos_id, seed=0, **pool)
        if evict and memory is not None:
            lengths = sorted({len(p) for p in batch})
            memory.append({"prompts": len(batch), "lengths": lengths, "fraction_held": report["fraction_held"]})
        answers += [tokenizer.decode(o[len(p) :].tolist()) for o, p in zip(outs, batch, strict=True)]
        bar.update(len(batch))
    bar.close()
    return answers


def accuracy_grid(trials: Sequence[PasskeyTrial], answers: Sequence[str]) -> dict[str, Any]:
    """Exact-match accuracy per (length, depth) of the trials (sorted) and overall, and every trial's key and answer.

    Returns {"lengths", "depths", "accuracy": [len(lengths)][len(depths)] (None where no trial), "overall",
    "trials": [{"length", "depth", "key", "answer", "correct"}]}. Raises ValueError when the counts differ or
    there are no trials."""
    if len(trials) != len(answers) or not trials:
        raise ValueError(f"{len(trials)} passkey trials but {len(answers)} answers (need the same number, >= 1)")
    lengths = sorted({t.length for t in trials})
    depths = sorted({t.depth for t in trials})
    hits = [[0] * len(depths) for _ in lengths]
    seen = [[0] * len(depths) for _ in lengths]
    rows = []
    for t, a in zip(trials, answers, strict=True):
        ok = score_answer(a, t.key)
        i, j = lengths.index(t.length), depths.index(t.depth)
        hits[i][j] += ok
        seen[i][j] += 1
        rows.append({"length": t.length, "depth": t.depth, "key": t.key, "answer": a, "correct": ok})
    acc = [[h / s if s else None for h, s in zip(hr, sr, strict=True)] for hr, sr in zip(hits, seen, strict=True)]
    return {
        "lengths": lengths,
        "depths": depths,
        "accuracy": acc,
        "overall": sum(map(sum, hits)) / len(rows),
        "trials": rows,
    }


def run_passkey(
    answer: Callable[[Sequence[PasskeyTrial]], list[str]], trials: Sequence[PasskeyTrial]
) -> dict[str, Any]:
    """:func:`accuracy_grid` of ``answer`` (trials -> answer texts, e.g. :func:`greedy_answers` bound to a model)
    on ``trials`` (from :func:`passkey_trials`)."""
    return accuracy_grid(trials, answer(trials))
