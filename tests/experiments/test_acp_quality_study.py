"""Smoke test of experiments/048-acp-quality-study on the CPU: run.sh with a tiny model, budget and packed corpus
(all written here), then report.py make on its tarball. The study itself needs a GPU (see the experiment README)."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from foxacp.data.pack import pack_corpus
from tests.experiments import EXPERIMENTS

EXPERIMENT = EXPERIMENTS / "048-acp-quality-study"
REPO = EXPERIMENT.parents[1]
WORDS = ("the", "river", "runs", "to", "sea", "and", "a", "ship", "sails", "on", "it", "while", "wind", "grey", "water")


def _text(seed: int, n: int) -> str:
    return " ".join(WORDS[(seed * 5 + i * i) % len(WORDS)] for i in range(n)) + "\n"


@pytest.mark.slow
def test_run_sh_then_report_on_cpu(tmp_path):
    corpus = tmp_path / "public"
    (corpus / "train" / "s").mkdir(parents=True)
    (corpus / "heldout" / "s").mkdir(parents=True)
    for i in range(12):
        (corpus / "train" / "s" / f"{i}.txt").write_text(_text(i, 2000))
    (corpus / "heldout" / "s" / "long.txt").write_text(_text(99, 600))
    data = tmp_path / "study"
    pack_corpus(corpus, data, vocab_size=512, cache_dir=tmp_path / "cache")
    item = {"task": "piqa", "split": "validation", "doc_id": 0, "gold": 1, "requests": [["Q:", " a"], ["Q:", " b"]]}
    (data / "tasks.jsonl").write_text(json.dumps(item) + "\n")
    env = dict(
        os.environ,
        PY=sys.executable,
        DATA=str(data),
        RUNS=str(tmp_path / "runs"),
        OUT=str(tmp_path / "out"),
        DEVICE="cpu",
        TOKENS="3072",
        SEQ="384",
        BATCH_TOKENS="1536",
        MICRO="4",
        LAYERS="1",
        DMODEL="32",
        HEADS="1",
        EVAL_EVERY="1",
        CKPT_EVERY="1",
        MAXLEN="768",
        PK_LENGTHS="300",
        TRIALS="1",
        EVAL_DTYPE="float32",
        PASSKEY="0.1",
        TRAIN_S="300",
    )
    run = subprocess.run(
        ["bash", str(EXPERIMENT / "run.sh")], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "| exact model |" in run.stdout and "| piqa | validation | 1 |" in run.stdout
    tar = tmp_path / "out" / "study.tar.gz"
    with tarfile.open(tar) as t:
        names = set(t.getnames())
    assert {"./eval-acp/eval.json", "./zeroshot-exact/zeroshot.json", "./gates-acp.safetensors"} <= names
    made = subprocess.run(
        [sys.executable, str(EXPERIMENT / "report.py"), "make", str(tar), "--root", str(tmp_path / "results")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    out = Path(made.stdout.strip().splitlines()[-1])
    assert out.name.endswith("-acp-quality-study-cpu")
    for name in ("README.md", "training.png", "loss_by_position.png", "passkey_exact_model.png", "head_saving.png"):
        assert (out / name).is_file(), name
    assert "10% of training rows are synthetic passkey" in (out / "README.md").read_text()  # PASSKEY=0.1
    study = json.loads((out / "study.json").read_text())
    assert study["training"]["acp"]["final_step"] == 2 and study["zeroshot"]["piqa"]["documents"] == 1
