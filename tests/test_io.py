"""foxacp.io: atomic writes, temporaries named by their process, and JSONL reading."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from foxacp.io import atomic_file, atomic_write, host_name, read_jsonl, remove_stale_temps, temp_path


def dead_pid() -> int:
    """The pid of a process that has exited."""
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(out.stdout)


def test_atomic_write_replaces_and_an_error_leaves_the_old_file(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write(target, "one")
    atomic_write(target, "two")
    assert target.read_text() == "two"
    with pytest.raises(RuntimeError), atomic_file(target) as f:
        f.write(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "two" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_only_temporaries_of_exited_processes_on_this_host_are_removed(tmp_path):
    mine = temp_path(tmp_path / "a.bin")
    assert mine.name.startswith(".a.bin.tmp-") and str(os.getpid()) in mine.name
    dead = tmp_path / f".b.bin.tmp-{dead_pid()}-{host_name()}-0123abcd"
    dead_dir = tmp_path / f".step_000004.tmp-{dead_pid()}-{host_name()}-89abcdef"
    elsewhere = tmp_path / f".c.bin.tmp-{dead_pid()}-another-host-0123abcd"
    for p in (mine, dead, elsewhere):
        p.write_bytes(b"x")
    dead_dir.mkdir()
    (dead_dir / "model.safetensors").write_bytes(b"x")
    (tmp_path / "keep.bin").write_bytes(b"x")
    assert sorted(remove_stale_temps(tmp_path)) == sorted([dead, dead_dir])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, elsewhere.name, "keep.bin"])
    assert remove_stale_temps(tmp_path / "missing") == []


def test_read_jsonl_names_the_file_and_line_of_a_bad_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n\n[2]\n{"a": \n')
    with pytest.raises(ValueError, match=r"log\.jsonl:4: malformed JSONL line"):
        list(read_jsonl(path))
    assert list(read_jsonl(path, skip_malformed=True)) == [(1, {"a": 1}), (3, [2])]
    path.write_bytes(b'{"a": 1}\n\xff\xfe\n')
    with pytest.raises(ValueError, match=r":2: malformed JSONL line \(not UTF-8\)"):
        list(read_jsonl(path))
