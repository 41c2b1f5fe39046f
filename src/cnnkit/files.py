"""Files written whole or not at all: a temporary file in the same folder, flushed and fsynced, then renamed over
the target. A kill, a crash or a full disk leaves the previous version intact (and no temporary file behind).

    with atomic_open(path) as f:      # binary; atomic_open(path, "w") for text
        torch.save(state, f)
    atomic_write(path, text)          # str or bytes

A full disk (ENOSPC, or a quota: EDQUOT) is a DiskFull error, a CnnkitError in one line that names the file.
"""
from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cnnkit.errors import CnnkitError

FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(CnnkitError):
    """No space left to write `path`; the previous version of the file is intact. `hint` says what to do next."""

    def __init__(self, path: Path, reason: str, hint: str = "free some space and try again"):
        super().__init__(f"no space left on the device to write {path} ({reason}); the previous version of the "
                         f"file is intact: {hint}")
        self.path, self.reason = path, reason


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """A file object to write `path` through; the file appears (replacing the old one) only when the block ends
    without an error. `mode` is "wb" or "w" (UTF-8 text, no newline translation)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno in FULL:
            raise DiskFull(path, err.strerror or os.strerror(err.errno)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write `data` to `path` atomically (see atomic_open)."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
