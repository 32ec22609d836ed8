"""The token cache: each split tokenized once into one flat memory-mapped token file.

Layout of CACHE_DIR/tokens/<corpus key>--<tokenizer name>/:

    train.bin, val.bin          all documents of the split, each followed by EOS, as raw uint16
                                (vocab_size <= 65536) or uint32
    train.offsets.npy, ...      int64 (n_docs + 1,): document i is tokens[offsets[i]:offsets[i+1]]
    meta.json                   written last: a cache without it is incomplete and is rebuilt

Every file is written to a temporary name and moved into place with os.replace (foxacp.io), so an
interrupted run never leaves a cache that looks complete, and ranks that build the same cache at once
write identical files. Temporaries left by a killed process are deleted when the cache is next prepared.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from foxacp.data.corpus import Corpus, Split
from foxacp.data.tokenizer import Tokenizer
from foxacp.io import atomic_file, atomic_write, remove_stale_temps

SPLITS: tuple[Split, ...] = ("train", "val")
ENCODE_CHUNK = 256  # documents per encode_batch call


@dataclass(frozen=True)
class TokenSplit:
    """One tokenized split.

    Attributes:
        tokens: (N,) uint16 or uint32, memory-mapped: the documents back to back, each ending
            with EOS.
        offsets: (n_docs + 1,) int64 document start offsets into `tokens`, ending with N.
        sha1: the SHA-1 of the token file, written with it (None for splits made otherwise): the identity of
            the data a resumed loader checks.
    """

    tokens: np.ndarray
    offsets: np.ndarray
    sha1: str | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1


@dataclass(frozen=True)
class TokenCache:
    """Both splits of one (corpus, tokenizer) pair and the folder they live in."""

    path: Path
    train: TokenSplit
    val: TokenSplit


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


# 2: special-token text inside a document is ordinary text, null text fields are empty documents (caches made
# before hold other ids for such documents, and are not reused).
TOKENS_VERSION = 2


def cache_path(cache_dir: Path, corpus: Corpus, tokenizer: Tokenizer) -> Path:
    """The folder of the token cache keyed by (corpus.key, tokenizer.name, TOKENS_VERSION)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{corpus.key}--{tokenizer.name}")[:120]
    digest = hashlib.sha1(f"{corpus.key}\0{tokenizer.name}\0v{TOKENS_VERSION}".encode()).hexdigest()[:10]
    return Path(cache_dir) / "tokens" / f"{readable}-{digest}"


def prepare_tokens(corpus: Corpus, tokenizer: Tokenizer, cache_dir: Path, *, progress: bool = True) -> TokenCache:
    """Tokenize both splits of `corpus` into the cache (once) and memory-map them.

    A complete cache for the same (corpus.key, tokenizer.name) is reused without tokenizing.

    Args:
        corpus: the documents.
        tokenizer: appends its eos_id after every document.
        cache_dir: root cache folder (created if missing).
        progress: show a tqdm bar per split while tokenizing.

    Raises:
        ValueError: when a split holds no documents.
    """
    path = cache_path(cache_dir, corpus, tokenizer)
    meta = {
        "corpus": corpus.key,
        "tokenizer": tokenizer.name,
        "vocab_size": tokenizer.vocab_size,
        "dtype": token_dtype(tokenizer.vocab_size).name,
    }
    remove_stale_temps(path)
    if not _is_complete(path, meta):
        path.mkdir(parents=True, exist_ok=True)
        counts = {s: _write_split(path, s, corpus, tokenizer, progress) for s in SPLITS}
        atomic_write(path / "meta.json", json.dumps({**meta, "splits": counts}, indent=1))
    meta = json.loads((path / "meta.json").read_text())
    return TokenCache(path, *(_load_split(path, s, meta) for s in SPLITS))


def open_token_cache(path: Path, tokenizer: Tokenizer) -> TokenCache:
    """Memory-map a complete token cache folder written by :func:`prepare_tokens` (or a copy of one, moved to
    another machine without its corpus): the "tokens:PATH" corpus of ``make_datasets``.

    Raises:
        ValueError: ``path`` holds no complete cache (no meta.json, or token files shorter or longer than it
            records), or one made with another tokenizer (its ``name`` or vocabulary size differ from
            ``tokenizer``'s).
    """
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"{path} is not a complete token cache (no readable meta.json)") from None
    for key, value in (("tokenizer", tokenizer.name), ("vocab_size", tokenizer.vocab_size)):
        if meta.get(key) != value:
            raise ValueError(f"token cache {path} was made with {key} {meta.get(key)!r}, the tokenizer has {value!r}")
    return TokenCache(path, *(_load_split(path, s, meta) for s in SPLITS))


def _is_complete(path: Path, meta: dict) -> bool:
    try:
        saved = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    if not all(saved.get(k) == v for k, v in meta.items()):
        return False
    try:  # a damaged split (a file cut short) is rebuilt
        for split in SPLITS:
            _load_split(path, split, saved)
    except (OSError, ValueError, KeyError):
        return False
    return True


def _write_split(path: Path, split: Split, corpus: Corpus, tokenizer: Tokenizer, progress: bool) -> dict:
    dtype = token_dtype(tokenizer.vocab_size)
    lengths = []
    bar = tqdm(
        total=len(corpus.split_ids(split)),
        desc=f"tokenizing {split}",
        unit="doc",
        disable=not progress,
    )
    digest = hashlib.sha1()
    with atomic_file(path / f"{split}.bin") as f:
        for texts in _chunks(corpus.documents(split), ENCODE_CHUNK):
            for ids in tokenizer.encode_batch(texts):
                doc = np.array([*ids, tokenizer.eos_id], dtype=dtype).tobytes()
                f.write(doc)
                digest.update(doc)
                lengths.append(len(doc) // dtype.itemsize)
            bar.update(len(texts))
    bar.close()
    if not lengths:
        raise ValueError(f"corpus {corpus.spec!r} has no {split} documents")
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    with atomic_file(path / f"{split}.offsets.npy") as f:
        np.save(f, offsets)
    return {"documents": len(lengths), "tokens": int(offsets[-1]), "sha1": digest.hexdigest()}


def _load_split(path: Path, split: Split, meta: dict) -> TokenSplit:
    """Raises ValueError when the split's files disagree with meta.json (a copy cut short, say)."""
    tokens = np.memmap(path / f"{split}.bin", dtype=np.dtype(meta["dtype"]), mode="r")
    offsets = np.load(path / f"{split}.offsets.npy")
    recorded = meta.get("splits", {}).get(split, {})
    expected = recorded.get("tokens", len(tokens))
    if not (len(tokens) == expected == int(offsets[-1])):
        raise ValueError(
            f"token cache {path}: {split}.bin holds {len(tokens)} tokens, its offsets end at {int(offsets[-1])} "
            f"and meta.json says {expected}: the cache is damaged (a copy cut short?); copy or build it again"
        )
    return TokenSplit(tokens, offsets, recorded.get("sha1"))


def _chunks(texts: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(islice(texts, size)):
        yield chunk
