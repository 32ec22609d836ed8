"""A rebuild of the public corpus cut short leaves no manifest that describes files it did not write (the manifest
is the record of a complete corpus: ids, splits, files, sha256)."""

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from foxacp.data import public_corpus as pc

SOURCE = pc.Source("demo", "pypi", "demo", "1.0", "public domain", "demo/docs/*.txt")


def _wheel(out: Path) -> None:
    (out / "downloads").mkdir(parents=True)
    with zipfile.ZipFile(out / "downloads" / "demo-1.0-py3-none-any.whl", "w") as z:
        for i in range(8):
            z.writestr(f"demo/docs/doc{i}.txt", f"document {i} " * (200 + 50 * i))


def _consistent(out: Path) -> bool:
    manifest = json.loads((out / "manifest.json").read_text())
    for r in manifest["documents"]:
        f = out / r["file"]
        if not f.is_file() or hashlib.sha256(f.read_bytes()).hexdigest() != r["sha256"]:
            return False
    return True


def test_interrupted_rebuild_leaves_no_stale_manifest(tmp_path, monkeypatch):
    out = tmp_path / "public"
    _wheel(out)
    pc.build(out, sources=(SOURCE,), heldout_docs=2, min_heldout_bytes=2000)
    assert _consistent(out)

    # A re-run (it rewrites the text folders) killed after three documents: the old manifest must not describe them.
    real = Path.write_bytes
    written = []

    def write_bytes(self, data):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(self)
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(KeyboardInterrupt):
        pc.build(out, sources=(SOURCE,), heldout_docs=2, min_heldout_bytes=2000)
    monkeypatch.undo()
    # Either no manifest (the corpus is visibly incomplete) or one that describes the files that are there.
    assert not (out / "manifest.json").exists() or _consistent(out)
