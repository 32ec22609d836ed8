"""foxacp.io durability: what a CPU test can observe of fsync / rename ordering, with os.fsync and os.replace
recorded (not faked: they still run)."""

from __future__ import annotations

import os

from foxacp import io as fio
from foxacp.io import atomic_write, durable_file, process_alive, read_jsonl, remove_stale_temps


def _record(monkeypatch):
    """Record ("fsync", path, size-on-disk) and ("replace", src, dst) in call order."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync", path, os.fstat(fd).st_size))
        return real_fsync(fd)

    def replace(src, dst, *a, **k):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_durable_file_flushes_python_buffers_before_fsync(tmp_path, monkeypatch):
    """The fsync must see every byte written: Python's buffer is flushed to the OS first."""
    events = _record(monkeypatch)
    with durable_file(tmp_path / "f.bin") as f:
        f.write(b"x" * 100)  # small: stays in Python's buffer until flushed
    assert [e for e in events if e[0] == "fsync"] == [("fsync", str(tmp_path / "f.bin"), 100)]


def test_atomic_write_fsyncs_the_data_then_renames_then_fsyncs_the_folder(tmp_path, monkeypatch):
    target = tmp_path / "latest"
    events = _record(monkeypatch)
    atomic_write(target, "step_000002\n")
    kinds = [e[0] for e in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    tmp_fsync, rename, dir_fsync = events
    assert tmp_fsync[1] == rename[1] and tmp_fsync[2] == len("step_000002\n")  # the full temp file, fsynced
    assert rename[2] == str(target)
    assert dir_fsync[1] == str(tmp_path)  # the rename itself made durable
    assert target.read_text() == "step_000002\n"


def test_a_process_of_another_user_counts_as_alive_and_keeps_its_temporaries(tmp_path, monkeypatch):
    def kill(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", kill)
    assert process_alive(12345)
    temp = tmp_path / f".x.bin.tmp-12345-{fio.host_name()}-0123abcd"
    temp.write_bytes(b"live")
    assert remove_stale_temps(tmp_path) == []
    assert temp.exists()


def test_a_symlinked_stale_temporary_is_unlinked_and_its_target_kept(tmp_path):
    import subprocess
    import sys

    dead = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    )
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.bin").write_bytes(b"x")
    link = tmp_path / f".step_000001.tmp-{dead}-{fio.host_name()}-0123abcd"
    link.symlink_to(target, target_is_directory=True)
    assert remove_stale_temps(tmp_path) == [link]
    assert not link.exists() and not link.is_symlink()
    assert (target / "keep.bin").exists()


def test_skip_malformed_skips_a_bad_line_in_the_middle_and_reads_on(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    assert [v["step"] for _, v in read_jsonl(path, skip_malformed=True)] == [1, 3]
