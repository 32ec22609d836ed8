"""Corpora: where documents come from, and which of them are held out.

A corpus is chosen by one spec string:

    "stdlib"        the running Python's standard library, one .py file per document (found
                    through sysconfig; needs no files and no network)
    "PATH[#FIELD]"  a local text file or folder: .txt/.md/.rst/.py files are one document each;
                    each line of a .jsonl file is one document, its text in FIELD (default "text")
    "hf:NAME_OR_PATH[@CONFIG][:SPLIT][#FIELD]"
                    a Hugging Face dataset: a folder written by save_to_disk, a local data file
                    (.jsonl/.json/.csv/.parquet, else plain text), or a hub name (load_dataset,
                    needs the network); SPLIT defaults to "train", FIELD to "text"

Documents are listed in a deterministic order (sorted relative paths, then line numbers; row order
for datasets). The held-out split is the `ceil(VAL_FRACTION * n)` documents (at least a few) with
the smallest SHA-1 of their id, so it depends only on the set of document ids.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from foxacp.io import read_jsonl

Split = Literal["train", "val"]

VAL_FRACTION = 0.015
MIN_VAL_DOCS = 3
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py")
JSONL_SUFFIX = ".jsonl"
SNIFF_BYTES = 8192  # how much of a text file is checked for binary content
# Bytes that occur in text: everything but the C0 control codes other than \t \n \v \f \r \b and ESC.
_TEXT_BYTES = bytes(b for b in range(256) if b >= 32 or b in b"\t\n\v\f\r\b\x1b")
# Bump when the listing or the split rule changes: it is part of every cache key.
SPLIT_VERSION = 1


@dataclass(frozen=True)
class Corpus:
    """A list of documents with a fixed train / held-out split.

    Attributes:
        spec: the spec string it was loaded from.
        key: a stable string that changes whenever the documents may change (used in cache keys).
        ids: document ids in corpus order.
        val_ids: the held-out ids.
        read: yields the texts of the given ids, in the given order.
        max_bytes: cap on the UTF-8 bytes read per split, or None.
    """

    spec: str
    key: str
    ids: tuple[str, ...]
    val_ids: frozenset[str]
    read: Callable[[Sequence[str]], Iterator[str]]
    max_bytes: int | None = None

    def split_ids(self, split: Split) -> list[str]:
        """Ids of one split, in corpus order. Raises ValueError for an unknown split."""
        if split == "val":
            return [i for i in self.ids if i in self.val_ids]
        if split == "train":
            return [i for i in self.ids if i not in self.val_ids]
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")

    def documents(self, split: Split) -> Iterator[str]:
        """Yield the non-empty texts of one split in corpus order; stop once past `max_bytes`."""
        total = 0
        for text in self.read(self.split_ids(split)):
            if not text:
                continue
            yield text
            total += len(text.encode("utf-8"))
            if self.max_bytes is not None and total >= self.max_bytes:
                return


def document_text(value: object, where: str) -> str:
    """A record's text field as a document: None is an empty document (skipped, as empty text is); lone
    surrogates (JSON allows "\\ud800") become U+FFFD, as invalid UTF-8 in text files does. Raises ValueError,
    naming ``where``, for a value that is not a string."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: the text field holds a {type(value).__name__}, not a string")
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def held_out_ids(ids: Sequence[str]) -> frozenset[str]:
    """The held-out ids: the `max(ceil(VAL_FRACTION * n), min(MIN_VAL_DOCS, n // 2))` ids with the
    smallest SHA-1 digest. Raises ValueError when fewer than two ids are given."""
    n = len(ids)
    if n < 2:
        raise ValueError(f"a corpus needs at least 2 documents to hold one out, found {n}")
    n_val = max(math.ceil(VAL_FRACTION * n), min(MIN_VAL_DOCS, n // 2))
    # surrogateescape: file names that are not UTF-8 hash too (valid names as before).
    ranked = sorted(ids, key=lambda i: hashlib.sha1(i.encode("utf-8", "surrogateescape")).digest())
    return frozenset(ranked[:n_val])


def load_corpus(spec: str, *, max_bytes: int | None = None) -> Corpus:
    """Load a corpus from its spec (see the module docstring).

    Args:
        spec: "stdlib", "PATH[#FIELD]" or "hf:NAME_OR_PATH[@CONFIG][:SPLIT][#FIELD]".
        max_bytes: stop reading each split once it holds this many UTF-8 bytes (None: no cap).

    Raises:
        ValueError: empty spec, missing path, a folder without text files, a non-positive max_bytes,
            fewer than 2 documents, a malformed .jsonl line (naming the file and line), or (hf) a missing
            split or text field.
    """
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if not spec:
        raise ValueError("empty corpus spec; use 'stdlib', a path, or 'hf:NAME_OR_PATH[:split]'")
    if spec == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        files = _list_files(root, (".py",))
        version = ".".join(map(str, sys.version_info[:3]))
        key = f"stdlib-py{version}-{_digest(str(root))}"
        return _file_corpus(spec, key, root, files, "text", max_bytes)
    if spec.startswith("hf:"):
        return _hf_corpus(spec, max_bytes)
    path, field = corpus_path(spec)
    if path.is_dir():
        root, files = path, _list_files(path, (*TEXT_SUFFIXES, JSONL_SUFFIX))
    else:
        root, files = path.parent, [path]
    stats = sorted((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = f"path-{path.name}-{_digest(json.dumps([str(path.resolve()), field, stats]))}"
    return _file_corpus(spec, key, root, files, field or "text", max_bytes)


def corpus_path(spec: str) -> tuple[Path, str]:
    """The path and text field of a "PATH[#FIELD]" spec. Raises ValueError when the path does not exist: cheap, so
    a training run checks it before it claims its run directory."""
    path_str, _, field = spec.partition("#")
    path = Path(path_str).expanduser()
    if not path.exists():
        raise ValueError(f"corpus path {str(path)!r} does not exist (spec {spec!r})")
    return path, field


def _list_files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files under `root` with one of `suffixes`, skipping hidden folders, caches and installed packages."""
    skip = {"__pycache__", "site-packages", "dist-packages"}
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in skip and not d.startswith(".")]
        files += [Path(folder, n) for n in names if n.endswith(suffixes) and not n.startswith(".")]
    return files


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def _file_corpus(spec: str, key: str, root: Path, files: list[Path], field: str, max_bytes: int | None) -> Corpus:
    """Text files are one document each (id: relative path), .jsonl lines too (id: path:line)."""
    entries: list[tuple[str, Path, int | None]] = []
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root).as_posix()
        if path.suffix == JSONL_SUFFIX:
            entries += [(f"{rel}:{n}", path, n) for n, _ in read_jsonl(path)]
        elif path.stat().st_size > 0:
            if looks_binary(path):
                warnings.warn(f"corpus {spec!r}: skipping {path}, which looks binary, not text", stacklevel=3)
                continue
            entries.append((rel, path, None))
    if not entries:
        raise ValueError(f"corpus {spec!r} has no documents")
    by_id = {doc_id: (path, line) for doc_id, path, line in entries}

    def read(ids: Sequence[str]) -> Iterator[str]:
        cached_path, cached_records = None, {}
        for doc_id in ids:
            path, line = by_id[doc_id]
            if line is None:
                yield path.read_text(encoding="utf-8", errors="replace")
                continue
            if path != cached_path:
                cached_path, cached_records = path, dict(read_jsonl(path))
            record = cached_records[line]
            if not isinstance(record, dict) or field not in record:
                raise ValueError(f"{path}:{line} has no text field {field!r}")
            yield document_text(record[field], f"{path}:{line}")

    ids = tuple(doc_id for doc_id, _, _ in entries)
    full_key = f"{key}-v{SPLIT_VERSION}-max{max_bytes}"
    return Corpus(spec, full_key, ids, held_out_ids(ids), read, max_bytes)


def looks_binary(path: Path) -> bool:
    """Whether the first SNIFF_BYTES of ``path`` hold a NUL byte or more than 10% control bytes. Text in
    another encoding than UTF-8 (latin-1 sources in the stdlib) is still text and is read with
    replacement characters; images, archives and pickles hold NUL bytes within a few KB."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    return b"\0" in head or len(head.translate(None, _TEXT_BYTES)) > len(head) // 10


def _hf_corpus(spec: str, max_bytes: int | None) -> Corpus:
    """Load "hf:NAME_OR_PATH[@CONFIG][:SPLIT][#FIELD]" with `datasets` (imported lazily)."""
    rest, _, field = spec[len("hf:") :].partition("#")
    name, sep, split = rest.rpartition(":")
    if not sep:
        name, split = rest, "train"
    name, _, config = name.partition("@")
    field = field or "text"
    if not name or not split:
        raise ValueError(f"bad hf corpus spec {spec!r}; expected 'hf:NAME_OR_PATH[@CONFIG][:SPLIT][#FIELD]'")
    try:
        import datasets
    except ImportError as e:
        raise ValueError(f"corpus {spec!r} needs the `datasets` package: pip install datasets") from e

    path = Path(name).expanduser()
    if path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "state.json")):
        ds = datasets.load_from_disk(str(path))
        key_source = f"disk:{path.resolve()}"
    elif path.is_file():
        builder = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix, "text")
        ds = datasets.load_dataset(builder, data_files=str(path))
        key_source = f"file:{path.resolve()}:{path.stat().st_mtime_ns}"
    else:
        ds = datasets.load_dataset(name, config or None)
        key_source = f"hub:{name}@{config}"
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"dataset {name!r} has no split {split!r}; it has {sorted(ds)}")
        ds = ds[split]
    if field not in ds.column_names:
        raise ValueError(f"dataset {name!r} has no text field {field!r}; columns: {ds.column_names}")
    ds = ds.select_columns([field])
    if len(ds) == 0:
        raise ValueError(f"corpus {spec!r} has no documents")

    def read(ids: Sequence[str]) -> Iterator[str]:
        rows = ds.select([int(i) for i in ids])
        for batch in rows.iter(batch_size=1000):
            yield from (document_text(t, f"{spec} row") for t in batch[field])

    ids = tuple(str(i) for i in range(len(ds)))
    key = f"hf-{_digest(json.dumps([key_source, split, field, getattr(ds, '_fingerprint', '')]))}"
    full_key = f"{key}-v{SPLIT_VERSION}-max{max_bytes}"
    return Corpus(spec, full_key, ids, held_out_ids(ids), read, max_bytes)
