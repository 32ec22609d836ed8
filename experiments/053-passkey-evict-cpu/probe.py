"""A quick look at whether a run retrieves yet: greedy answers to 12 passkey prompts of 200 tokens.

PYTHONPATH=src python experiments/053-passkey-evict-cpu/probe.py runs/053/train
"""

from __future__ import annotations

import sys

import torch

from foxacp.eval.passkey import accuracy_grid, greedy_answers, passkey_trials
from foxacp.eval.report import load_model_and_tokenizer


def main(path: str) -> None:
    torch.set_num_threads(1)
    model, tokenizer, _ = load_model_and_tokenizer(path, "cpu")
    trials = passkey_trials(tokenizer, lengths=[200], depths=[0.1, 0.6, 0.9], trials=4, seed=1)
    grid = accuracy_grid(trials, greedy_answers(model, tokenizer, trials, digits=5, progress=False))
    pairs = ", ".join(f"{t['key']}->{t['answer'].strip()}" for t in grid["trials"])
    print(f"accuracy {grid['overall']:.2f}: {pairs}")


if __name__ == "__main__":
    main(sys.argv[1])
