"""Shared fixtures for the data tests: small local corpora and a network guard."""

import json
import socket
from pathlib import Path

import pytest

WORDS = ("the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "on", "by", "an")


def _make_text(seed: int, n_words: int) -> str:
    """Deterministic pseudo-English text."""
    return " ".join(WORDS[(seed * 7 + i * i) % len(WORDS)] for i in range(n_words)) + "\n"


@pytest.fixture
def make_text():
    """The deterministic text generator the corpus fixtures use."""
    return _make_text


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to open a network connection."""

    def refuse(*args, **kwargs):
        raise RuntimeError("the data tests must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def text_folder(tmp_path: Path) -> Path:
    """A folder of 12 .txt/.md/.py documents, a .jsonl with 3 records, and files to be ignored."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for i in range(12):
        suffix = (".txt", ".md", ".py")[i % 3]
        folder = root / "sub" if i % 2 else root
        (folder / f"doc{i:02d}{suffix}").write_text(_make_text(i, 40 + 5 * i))
    records = [{"text": _make_text(100 + i, 30), "body": f"body {i}"} for i in range(3)]
    lines = [json.dumps(r) for r in records]
    (root / "records.jsonl").write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n")
    (root / "empty.txt").write_text("")
    (root / ".hidden" / "secret.txt").write_text("not a document")
    (root / "image.bin").write_bytes(b"\x00\x01")
    return root
