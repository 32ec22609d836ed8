"""Data at the edges: special-token text and tokenizer.json settings inside documents, null and odd JSONL text
fields, file names that are not UTF-8, and hub tokenizers that change under the same name."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer

from foxacp.data import ByteTokenizer, build_tokenizer, load_corpus, prepare_tokens
from foxacp.data import tokenizer as tokenizer_module
from foxacp.data.tokenizer import EOS_TOKEN

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")


def _folder(root: Path, texts: list[str]) -> Path:
    root.mkdir(parents=True)
    for i, text in enumerate(texts):
        (root / f"doc{i:02d}.txt").write_text(text, encoding="utf-8")
    return root


def _texts(n: int, seed: int = 0, words: tuple[str, ...] = WORDS) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(words[j] for j in rng.integers(0, len(words), 120)) + "\n" for _ in range(n)]


def _eos_only_at_document_ends(split, eos_id: int) -> None:
    tokens = np.asarray(split.tokens)
    np.testing.assert_array_equal(np.flatnonzero(tokens == eos_id), split.offsets[1:] - 1)


def test_literal_eos_string_in_a_document_does_not_become_the_eos_id(tmp_path: Path):
    """A document that contains the text "<|endoftext|>" (source code, chat logs, web pages about LMs) is encoded
    with the EOS id in its middle: the EOS no longer marks document ends (packing does not cut there, the model
    is trained to emit EOS inside a document)."""
    texts = _texts(12)
    texts = [t.replace("gamma", f"gamma {EOS_TOKEN}", 1) if i % 2 == 0 else t for i, t in enumerate(texts)]
    corpus = load_corpus(str(_folder(tmp_path / "corpus", texts)))
    tok = build_tokenizer("bpe:300", corpus=corpus, cache_dir=tmp_path / "cache")
    cache = prepare_tokens(corpus, tok, tmp_path / "cache", progress=False)
    for split in (cache.train, cache.val):
        _eos_only_at_document_ends(split, tok.eos_id)


def test_hf_tokenizer_json_truncation_and_padding_do_not_apply_to_documents(tmp_path: Path):
    """A tokenizer.json saved with truncation/padding enabled (as many hub tokenizers are) truncates every
    document to max_length tokens and pads the short ones of each encode_batch chunk: data lost and pad ids
    written into the token stream."""
    corpus = load_corpus(str(_folder(tmp_path / "corpus", _texts(8))))
    bpe = build_tokenizer("bpe:300", corpus=corpus, cache_dir=tmp_path / "cache")
    hf = bpe.tokenizer
    hf.enable_truncation(max_length=16)
    hf.enable_padding(pad_id=bpe.eos_id, pad_token=EOS_TOKEN)
    path = tmp_path / "tokenizer.json"
    path.write_text(hf.to_str(), encoding="utf-8")
    tok = build_tokenizer(f"hf:{path}")

    long_text, short_text = "alpha beta gamma delta " * 20, "alpha"
    assert tok.decode(tok.encode(long_text)) == long_text
    assert tok.encode_batch([short_text, long_text])[0] == tok.encode(short_text)
    cache = prepare_tokens(corpus, tok, tmp_path / "cache", progress=False)
    docs = list(corpus.documents("train"))
    for i, doc in enumerate(docs):
        a, b = cache.train.offsets[i], cache.train.offsets[i + 1]
        assert tok.decode(list(cache.train.tokens[a : b - 1])) == doc


def test_jsonl_null_text_is_an_empty_document_and_other_values_are_refused(tmp_path: Path):
    """{"text": null} (a missing value in an exported dataset) is an empty document (skipped), not "None"; a number
    or a list is refused with the file and line."""
    root = tmp_path / "corpus"
    root.mkdir()
    texts = [f"document {i} " * 5 if i % 3 else None for i in range(30)]
    (root / "r.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n")
    docs = [d for split in ("train", "val") for d in load_corpus(str(root)).documents(split)]
    assert "None" not in docs and len(docs) == 20  # empty documents are skipped
    (root / "r.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": 5}) + "\n")
    with pytest.raises(ValueError, match=r"r\.jsonl:2: the text field holds a int"):
        [d for split in ("train", "val") for d in load_corpus(str(root)).documents(split)]


def test_jsonl_lone_surrogate_becomes_a_replacement_character(tmp_path: Path):
    """A JSON "\\ud800" escape (common in scraped text) loads, and crashed tokenization with a bare
    UnicodeEncodeError; it is now U+FFFD, as invalid UTF-8 in a text file is."""
    root = tmp_path / "corpus"
    root.mkdir()
    lines = [json.dumps({"text": f"fine text {i}"}) for i in range(6)]
    lines[2] = '{"text": "broken \\ud800 text"}'
    (root / "r.jsonl").write_text("\n".join(lines) + "\n")
    corpus = load_corpus(str(root))
    docs = [d for split in ("train", "val") for d in corpus.documents(split)]
    assert any(d.startswith("broken \ufffd") for d in docs)
    prepare_tokens(corpus, ByteTokenizer(), tmp_path / "cache", progress=False)


def test_a_non_utf8_file_name_does_not_crash_the_split(tmp_path: Path):
    """A file whose name is not UTF-8 (latin-1 bytes from an old archive) makes load_corpus crash in
    held_out_ids with a bare UnicodeEncodeError (surrogates not allowed) that does not name the file."""
    root = _folder(tmp_path / "corpus", _texts(5))
    with open(os.path.join(os.fsencode(root), b"caf\xe9.txt"), "wb") as f:
        f.write(b"a document with a latin-1 name\n")
    try:
        corpus = load_corpus(str(root))
    except ValueError as e:
        assert "caf" in str(e), f"unclear error: {type(e).__name__}: {e}"
        return
    assert len(corpus.ids) == 6
    assert sum(len(list(corpus.documents(s))) for s in ("train", "val")) == 6


def test_a_changed_hub_tokenizer_does_not_reuse_the_old_token_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A hub tokenizer is named "hf-" + its repo name only, so when the repo's tokenizer.json changes (a new
    revision; same vocabulary size) the token cache of the old vocabulary is reused: every id is wrong."""
    corpus = load_corpus(str(_folder(tmp_path / "corpus", _texts(10))))
    old = build_tokenizer("bpe:300", corpus=corpus, cache_dir=tmp_path / "c1").tokenizer
    spec = json.loads(old.to_str())  # the new revision: two tokens trade ids (same vocabulary size)
    vocab = spec["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[-2:]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    new = HFTokenizer.from_str(json.dumps(spec))
    assert old.get_vocab_size() == new.get_vocab_size() and old.to_str() != new.to_str()

    served = [old]

    class Hub:
        @staticmethod
        def from_pretrained(name):
            return served[0]

    monkeypatch.setattr(tokenizer_module, "HFTokenizer", Hub)
    tok_old = build_tokenizer("hf:someorg/some-tokenizer")
    prepare_tokens(corpus, tok_old, tmp_path / "cache", progress=False)
    served[0] = new  # the repo was updated
    tok_new = build_tokenizer("hf:someorg/some-tokenizer")
    cache = prepare_tokens(corpus, tok_new, tmp_path / "cache", progress=False)
    first = next(corpus.documents("train"))
    np.testing.assert_array_equal(cache.train.tokens[: cache.train.offsets[1] - 1], tok_new.encode(first))
