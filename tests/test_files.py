"""cnnkit.files: whole files or none; a full disk is DiskFull (one line) and the previous version stays."""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from cnnkit.errors import CnnkitError
from cnnkit.files import DiskFull, atomic_open, atomic_write


def test_atomic_write_text_and_bytes(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a" / "b.txt", "héllo\n")
    assert (tmp_path / "a" / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write(tmp_path / "c.bin", b"\x00\x01")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"


def test_an_error_midway_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    atomic_write(path, "old")
    with pytest.raises(RuntimeError), atomic_open(path, "w") as f:
        f.write("half of the new")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_enospc_is_disk_full_in_one_line(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    atomic_write(path, b"previous")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("cnnkit.files.os.fsync", full)
    with pytest.raises(DiskFull) as err:
        atomic_write(path, b"new" * 1000)
    assert isinstance(err.value, CnnkitError) and "\n" not in str(err.value)
    assert str(err.value).startswith(f"no space left on the device to write {path} (No space left on device); the "
                                     "previous version of the file is intact")
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_other_os_errors_pass_through(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("cnnkit.files.os.replace", lambda *a: (_ for _ in ()).throw(PermissionError(13, "denied")))
    with pytest.raises(PermissionError):
        atomic_write(tmp_path / "y", "z")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    """A real 64 KiB tmpfs (root on Linux only; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_disk(tiny_tmpfs: Path) -> None:
    path = tiny_tmpfs / "state.bin"
    atomic_write(path, b"a" * 20_000)
    with pytest.raises(DiskFull, match="No space left on device"):
        atomic_write(path, b"b" * 60_000)  # the old file still holds 20 kB of the 64
    assert path.read_bytes() == b"a" * 20_000
    assert [p.name for p in tiny_tmpfs.iterdir()] == ["state.bin"]
