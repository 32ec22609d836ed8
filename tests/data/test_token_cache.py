from pathlib import Path

import numpy as np
import pytest

from foxacp.data import ByteTokenizer, load_corpus, prepare_tokens
from foxacp.data import cache as cache_module
from foxacp.data.cache import token_dtype


class FailingTokenizer(ByteTokenizer):
    """A byte tokenizer that raises after `ok_calls` encode_batch calls."""

    def __init__(self, ok_calls: int) -> None:
        self.ok_calls = ok_calls

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.ok_calls == 0:
            raise KeyboardInterrupt
        self.ok_calls -= 1
        return super().encode_batch(texts)


def test_tokens_and_offsets(text_folder: Path, tmp_path: Path):
    corpus = load_corpus(str(text_folder))
    tok = ByteTokenizer()
    cache = prepare_tokens(corpus, tok, tmp_path, progress=False)
    for split, tokens in (("train", cache.train), ("val", cache.val)):
        docs = list(corpus.documents(split))
        expected = np.concatenate([[*t.encode(), tok.eos_id] for t in docs])
        assert tokens.tokens.dtype == np.uint16 and isinstance(tokens.tokens, np.memmap)
        np.testing.assert_array_equal(tokens.tokens, expected)
        assert tokens.num_documents == len(docs)
        lengths = [len(t.encode()) + 1 for t in docs]
        np.testing.assert_array_equal(tokens.offsets, np.cumsum([0, *lengths]))
    assert sorted(p.name for p in cache.path.iterdir()) == [
        "meta.json",
        "train.bin",
        "train.offsets.npy",
        "val.bin",
        "val.offsets.npy",
    ]


def test_cache_is_reused(text_folder: Path, tmp_path: Path):
    corpus = load_corpus(str(text_folder))
    first = prepare_tokens(corpus, ByteTokenizer(), tmp_path, progress=False)
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()}
    again = prepare_tokens(corpus, FailingTokenizer(ok_calls=0), tmp_path, progress=False)
    assert again.path == first.path
    assert {p.name: p.stat().st_mtime_ns for p in again.path.iterdir()} == mtimes
    np.testing.assert_array_equal(again.train.tokens, first.train.tokens)


def test_interrupted_build_leaves_no_cache(text_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cache_module, "ENCODE_CHUNK", 2)
    corpus = load_corpus(str(text_folder))
    with pytest.raises(KeyboardInterrupt):
        prepare_tokens(corpus, FailingTokenizer(ok_calls=3), tmp_path, progress=False)
    (folder,) = (tmp_path / "tokens").iterdir()
    assert list(folder.iterdir()) == []  # no half-written file, no temporary left behind

    with pytest.raises(KeyboardInterrupt):  # dies during the val split: train is done, no meta.json
        prepare_tokens(corpus, FailingTokenizer(ok_calls=6), tmp_path, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["train.bin", "train.offsets.npy"]

    cache = prepare_tokens(corpus, ByteTokenizer(), tmp_path, progress=False)
    assert cache.path == folder and (folder / "meta.json").is_file()
    assert cache.val.num_documents == 3


def test_cache_key_separates_tokenizers_and_caps(text_folder: Path, tmp_path: Path):
    corpus = load_corpus(str(text_folder))
    byte = prepare_tokens(corpus, ByteTokenizer(), tmp_path, progress=False)
    capped = load_corpus(str(text_folder), max_bytes=500)
    small = prepare_tokens(capped, ByteTokenizer(), tmp_path, progress=False)
    assert small.path != byte.path and small.train.num_tokens < byte.train.num_tokens


def test_token_dtype():
    assert token_dtype(257) == np.uint16
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


def test_temporaries_of_a_killed_build_are_removed_next_time(text_folder: Path, tmp_path: Path):
    import os

    from foxacp.data.cache import cache_path
    from foxacp.io import host_name
    from tests.test_io import dead_pid

    corpus = load_corpus(str(text_folder))
    folder = cache_path(tmp_path, corpus, ByteTokenizer())
    folder.mkdir(parents=True)
    dead = folder / f".train.bin.tmp-{dead_pid()}-{host_name()}-0123abcd"
    alive = folder / f".val.bin.tmp-{os.getpid()}-{host_name()}-89abcdef"
    dead.write_bytes(b"partial")
    alive.write_bytes(b"being written")
    prepare_tokens(corpus, ByteTokenizer(), tmp_path, progress=False)
    assert not dead.exists() and alive.exists()


def test_each_split_knows_the_sha1_of_its_tokens(text_folder: Path, tmp_path: Path):
    """Written with the token file and read back from meta.json (a resumed loader checks it)."""
    import hashlib

    cache = prepare_tokens(load_corpus(str(text_folder)), ByteTokenizer(), tmp_path, progress=False)
    again = prepare_tokens(load_corpus(str(text_folder)), ByteTokenizer(), tmp_path, progress=False)  # reused
    for split in ("train", "val"):
        want = hashlib.sha1((cache.path / f"{split}.bin").read_bytes()).hexdigest()
        assert getattr(cache, split).sha1 == want == getattr(again, split).sha1


def test_a_token_file_cut_short_is_refused_and_rebuilt(text_folder: Path, tmp_path: Path):
    """A copy whose train.bin arrived cut short must not open (it would train on part of the data under the whole
    file's SHA-1), and prepare_tokens rebuilds such a cache instead of reusing it."""
    from foxacp.data.cache import open_token_cache

    tok = ByteTokenizer()
    cache = prepare_tokens(load_corpus(str(text_folder)), tok, tmp_path / "c", progress=False)
    data = (cache.path / "train.bin").read_bytes()
    (cache.path / "train.bin").write_bytes(data[: (len(data) // 4) * 2])
    with pytest.raises(ValueError, match="damaged"):
        open_token_cache(cache.path, tok)
    again = prepare_tokens(load_corpus(str(text_folder)), tok, tmp_path / "c", progress=False)
    assert again.train.num_tokens == cache.train.num_tokens
    assert (again.path / "train.bin").read_bytes() == data
