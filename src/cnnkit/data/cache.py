"""Decoded images, once: every image of a split fitted to the model's channels and size as one uint8 tensor
(n, C, S, S), decoded in parallel by DataLoader worker processes. In memory when it fits a quarter of the
available memory, else a numpy.memmap file in the cache folder ($CNNKIT_CACHE, else $XDG_CACHE_HOME/cnnkit,
else ~/.cache/cnnkit) named by a hash of the files' paths, sizes and modification times and of the fitting, so
a later run on the same files reads it instead of decoding again. Deleting the folder clears the cache.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cnnkit.data.images import BadImage
from cnnkit.data.sources import ImageSource
from cnnkit.data.transforms import FitSize
from cnnkit.errors import CnnkitError

MEMORY_SHARE = 0.25  # of the available memory, for images kept in memory
CACHE_VERSION = 1  # part of every key: a change of the fitting code invalidates old files


def auto_workers(items: int | None = None) -> int:
    """DataLoader workers for this machine: one core stays with the main process; at most 8; none on one core,
    and none for fewer than 64 `items` (starting a process costs more than decoding them)."""
    if items is not None and items < 64:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return 0 if cores <= 1 else min(8, cores - 1)


def available_memory() -> int:
    """Bytes of memory available now (psutil when installed, else /proc/meminfo, else the free pages)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def cache_folder() -> Path:
    """$CNNKIT_CACHE, else $XDG_CACHE_HOME/cnnkit, else ~/.cache/cnnkit."""
    if os.environ.get("CNNKIT_CACHE"):
        return Path(os.environ["CNNKIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnkit"


def fitted_arrays(source: ImageSource, indices: np.ndarray, channels: int, size: int, resize: str,
                  interpolation: str = "bilinear") -> torch.Tensor:
    """Images of `indices` at the model's channels and size, uint8 (n, C, S, S), in chunks to bound memory.
    In-memory arrays share one size and are fitted a chunk at a time; files (of any sizes) one at a time."""
    fit = FitSize(size, resize, interpolation)
    out = []
    for start in range(0, len(indices), 4096):
        chunk = indices[start:start + 4096]
        if not len(chunk):
            continue
        if source.arrays is not None:
            out.append(fit(torch.stack([source.load(int(j), channels) for j in chunk])))
        else:
            out.append(torch.stack([_decode(source, int(j), channels, fit) for j in chunk]))
    return torch.cat(out) if out else torch.empty(0, channels, size, size, dtype=torch.uint8)


def _decode(source: ImageSource, j: int, channels: int, fit: FitSize) -> torch.Tensor:
    try:
        return fit(source.load(j, channels))
    except BadImage as err:
        raise CnnkitError(f"cannot decode {source.ids[j]}: {err}") from None


class _Fitted(Dataset):
    """Item k: (k, the fitted image (C, S, S) uint8 or None, the reason it could not be decoded). Errors travel
    as text, so that the main process raises the one-line CnnkitError (a worker's exception would not be)."""

    def __init__(self, source: ImageSource, indices: np.ndarray, channels: int, fit: FitSize):
        self.source, self.indices, self.channels, self.fit = source, indices, channels, fit

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            return k, self.fit(self.source.load(int(self.indices[k]), self.channels)), ""
        except BadImage as err:
            return k, None, str(err)


def _as_list(items: list) -> list:
    return items  # the batch as a list: DataLoader's default collation would stack the None of a bad file


def _fill(out: np.ndarray | torch.Tensor, source: ImageSource, indices: np.ndarray, channels: int, fit: FitSize,
          workers: int) -> None:
    """Decode and fit every image of `indices` into `out` (n, C, S, S) uint8, `workers` processes in parallel."""
    loader = DataLoader(_Fitted(source, indices, channels, fit), batch_size=32, num_workers=workers,
                        collate_fn=_as_list)
    target = out if isinstance(out, torch.Tensor) else torch.from_numpy(out)
    for items in loader:
        for k, img, reason in items:
            if img is None:
                raise CnnkitError(f"cannot decode {source.ids[int(indices[k])]}: {reason}")
            target[k] = img


def cache_key(source: ImageSource, indices: np.ndarray, channels: int, size: int, resize: str,
              interpolation: str) -> str:
    """sha256 of the files (path, size, mtime) in `indices` order and of how they are fitted."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, channels, size, resize, interpolation]).encode())
    for j in indices:
        path = Path(source.paths[int(j)])
        st = path.stat()
        # surrogateescape: a file name that is not UTF-8 hashes as its bytes
        h.update(f"\n{path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


MEMO_BYTES = 2 * 2**30  # at most this much of decoded images stays in a process (a notebook runs many runs)
_DECODED: OrderedDict[str, torch.Tensor] = OrderedDict()  # this process's decoded splits, least recent first


def _remember(key: str, images: torch.Tensor, budget: int) -> None:
    """Keep `images` for the next call on the same files, dropping the oldest beyond `budget` bytes in all."""
    _DECODED[key] = images
    while sum(t.numel() for t in _DECODED.values()) > budget and len(_DECODED) > 1:
        _DECODED.popitem(last=False)


def decoded_images(source: ImageSource, indices: np.ndarray, channels: int, size: int, resize: str,
                   interpolation: str = "bilinear", cache_dir: str | Path | None = None, workers: int | None = None,
                   memory_budget: int | None = None) -> torch.Tensor:
    """The images of `indices` fitted to (channels, size, size): (n, C, S, S) uint8, decoded once.

    In-memory sources are fitted directly (`fitted_arrays`). Files are decoded by `workers` DataLoader processes
    (None: `auto_workers()`); the result stays in memory when it takes at most `memory_budget` bytes (None: a
    quarter of the available memory), else it is a memmap file in `cache_dir` (None: `cache_folder()`), written
    under a temporary name and renamed, and reused by later calls on unchanged files."""
    indices = np.asarray(indices, dtype=np.int64)
    if source.arrays is not None:
        return fitted_arrays(source, indices, channels, size, resize, interpolation)
    fit = FitSize(size, resize, interpolation)  # refuses a bad mode or interpolation before any decoding
    workers = min(auto_workers() if workers is None else workers, len(indices) // 64)  # none for a handful
    shape = (len(indices), channels, size, size)
    budget = int(MEMORY_SHARE * available_memory()) if memory_budget is None else memory_budget
    if int(np.prod(shape)) <= budget or not len(indices):
        key = cache_key(source, indices, channels, size, resize, interpolation)
        if key not in _DECODED:  # a run reads its train split 3 times (training, probe, verdict), val twice
            out = torch.empty(shape, dtype=torch.uint8)
            _fill(out, source, indices, channels, fit, workers)
            _remember(key, out, min(budget, MEMO_BYTES))
        _DECODED.move_to_end(key)
        return _DECODED[key]  # shared: callers read it (slices, normalised copies), never write to it
    folder = Path(cache_dir) if cache_dir is not None else cache_folder()
    path = folder / f"{cache_key(source, indices, channels, size, resize, interpolation)}.u8"
    if not path.is_file() or path.stat().st_size != int(np.prod(shape)):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
            _fill(out, source, indices, channels, fit, workers)
            out.flush()
            del out
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="c", shape=shape))  # copy-on-write: file unchanged
