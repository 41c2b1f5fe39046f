"""One training process per run folder: RUN/.lock, held with the operating system's file lock for as long as the
run writes the folder.

    acquire(run_dir)   # a second `cnnkit train --out RUN` (or --resume RUN) now fails in one line
    ...
    release(run_dir)

The lock is the OS's (flock on POSIX, msvcrt.locking on Windows), not the file's existence: a run killed with
kill -9, a crash or a power cut holds nothing afterwards, and `cnnkit train --resume RUN` takes the lock at once.
A finished run removes the file; a killed one leaves it (it says who held it last), never a reason to refuse on
its own. Network file systems may not honour the lock between machines.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from cnnkit.errors import CnnkitError

LOCK_NAME = ".lock"
_HELD: dict[Path, int] = {}  # run folder (resolved) → the open descriptor that holds its lock


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on `fd` without waiting; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(fd: int) -> str:
    """What the lock file says about the process that holds it ('pid 123 on host since ...')."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() if hasattr(os, "pread") else ""
    except OSError:
        text = ""
    return text or "another process"


def acquire(run_dir: str | Path) -> None:
    """Lock `run_dir` (created if needed) for this process; idempotent within the process. Another process that
    holds it is a one-line CnnkitError naming it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    if key in _HELD:
        return
    fd = _locked_file(run_dir)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    _HELD[key] = fd


def _locked_file(run_dir: Path) -> int:
    """A descriptor of RUN/.lock with its lock taken, or a one-line CnnkitError naming the holder. The file is
    removed on release, so a lock taken on a file that was meanwhile unlinked (or replaced) is taken again."""
    path = run_dir / LOCK_NAME
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = _holder(fd)
            os.close(fd)
            raise CnnkitError(f"{run_dir} is in use by another training process ({holder}); wait for it to finish, "
                              "or train into another folder (--out)")
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the file was released (unlinked) between our open and our lock: take the new one
    raise CnnkitError(f"cannot take the lock of {run_dir}: {path} keeps being replaced")


def release(run_dir: str | Path) -> None:
    """Give the lock of `run_dir` back and remove the file (while still holding it); nothing if this process holds
    none."""
    run_dir = Path(run_dir)
    fd = _HELD.pop(run_dir.resolve(), None)
    if fd is not None:
        try:
            (run_dir / LOCK_NAME).unlink(missing_ok=True)
        except OSError:  # Windows: an open file cannot be removed; the next run takes the lock all the same
            pass
        os.close(fd)


def is_locked(run_dir: str | Path) -> bool:
    """Whether a process (this one included) holds the lock of `run_dir` now."""
    run_dir = Path(run_dir)
    if Path(run_dir).resolve() in _HELD:
        return True
    if not (run_dir / LOCK_NAME).is_file():
        return False
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR)
    try:
        return not _try_lock(fd)
    finally:
        os.close(fd)
