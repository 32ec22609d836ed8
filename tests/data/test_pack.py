"""A packed corpus (tokenizer, token cache, held-out texts) read back as a "tokens:PATH" corpus from another folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from foxacp.data import build_tokenizer, load_corpus, make_datasets, prepare_data
from foxacp.data.cache import open_token_cache
from foxacp.data.pack import pack_corpus


@pytest.fixture
def corpus_dir(tmp_path, make_text):
    root = tmp_path / "public"
    for i in range(10):
        (root / "train" / "src").mkdir(parents=True, exist_ok=True)
        (root / "train" / "src" / f"d{i}.txt").write_text(make_text(i, 300))
    (root / "heldout" / "src").mkdir(parents=True)
    (root / "heldout" / "src" / "long.txt").write_text(make_text(99, 500))
    return root


def test_packed_corpus_travels_and_reads_back_the_same_tokens(tmp_path, corpus_dir):
    packed = tmp_path / "study"
    info = pack_corpus(corpus_dir, packed, vocab_size=300, cache_dir=tmp_path / "cache")
    assert info["vocab_size"] <= 300 and info["splits"]["train"]["documents"] + info["splits"]["val"]["documents"] == 10
    assert (packed / "heldout" / "src" / "long.txt").read_text() == (corpus_dir / "heldout/src/long.txt").read_text()
    moved = tmp_path / "elsewhere"
    shutil.copytree(packed, moved)
    shutil.rmtree(corpus_dir)  # the texts are not needed any more
    tok, cache = prepare_data(f"tokens:{moved / 'tokens'}", f"hf:{moved / 'tokenizer.json'}", tmp_path / "c2")
    assert tok.name == info["tokenizer"]
    assert cache.train.num_tokens == info["splits"]["train"]["tokens"]
    # The tokens are the tokenizer's encoding of the documents, each followed by EOS.
    first = np.asarray(cache.train.tokens[cache.train.offsets[0] : cache.train.offsets[1]])
    assert first[-1] == tok.eos_id
    data = make_datasets(f"tokens:{moved / 'tokens'}", f"hf:{moved / 'tokenizer.json'}", tmp_path / "c2", 32, 4)
    assert next(data.train)["input_ids"].shape == (4, 32)


def test_token_cache_of_another_tokenizer_or_incomplete_is_refused(tmp_path, corpus_dir):
    packed = tmp_path / "study"
    pack_corpus(corpus_dir, packed, vocab_size=300, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="tokenizer"):
        open_token_cache(packed / "tokens", build_tokenizer("byte"))
    (packed / "tokens" / "meta.json").unlink()
    tok = build_tokenizer(f"hf:{packed / 'tokenizer.json'}")
    with pytest.raises(ValueError, match="not a complete token cache"):
        open_token_cache(packed / "tokens", tok)
    with pytest.raises(ValueError, match="no train/"):
        pack_corpus(tmp_path / "nothing", packed, vocab_size=300, cache_dir=tmp_path / "cache")


def test_packed_tokens_equal_a_direct_encoding(tmp_path, corpus_dir):
    packed = tmp_path / "study"
    pack_corpus(corpus_dir, packed, vocab_size=300, cache_dir=tmp_path / "cache")
    tok = build_tokenizer(f"hf:{packed / 'tokenizer.json'}")
    cache = open_token_cache(packed / "tokens", tok)
    corpus = load_corpus(str(corpus_dir / "train"))
    expected = [t for doc in corpus.documents("train") for t in [*tok.encode(doc), tok.eos_id]]
    assert np.asarray(cache.train.tokens).tolist() == expected
    assert json.loads((packed / "tokens" / "meta.json").read_text())["tokenizer"] == tok.name
