"""Near-duplicates and leaks: the same picture twice in a data set, or in two splits (a test image that is also a
training image, re-encoded or resized, makes the test score a memory test).

Two fingerprints per image:

- the exact pixel hash (`cnnkit.data.fingerprint.pixel_hashes`): equal pixels, whatever the file;
- a 64-bit perceptual hash (pHash): the image as grey, resized to 32x32 (bilinear with antialiasing, so that a
  500-pixel photo is averaged, not sampled), its 2-D DCT-II, and the 8x8 lowest frequencies; bit j is 1 when
  coefficient j is above the median of the 63 AC coefficients (the DC term, the mean brightness, is left out of
  the median and its bit is always 0). Low frequencies are what survives JPEG re-encoding, resizing, a little
  blur or a change of brightness, so copies differ in a few bits; unrelated pictures differ in about half.

Why pHash and not a dHash (the signs of horizontal gradients on a 9x8 thumbnail): both barely move under the
edits a leak goes through, but pHash keeps different photos much further apart, so a threshold has margin on both
sides. Measured on hymenoptera (benchmarks/audit_leaks.py, 398 photos, 20 training images copied into a test split:
10 re-encoded as JPEG quality 70, 10 resized by 0.9): copies are 0-2 bits from their originals with either hash;
the closest different photos of the clean set are 14 bits apart with pHash but 7 with dHash. Every pHash has 31
ones among its 63 AC bits (median thresholding), so distances are even. `MAX_DISTANCE` = 8 leaves 6 bits above
the copies (more than the 2 seen) and 6 below the closest clean pair: 20/20 copies found, no group on the clean set.

Finding pairs without comparing all of them (70,000 MNIST digits are 2.4e9 pairs): the multi-index trick. Split
the bits into k+1 blocks; two hashes within Hamming distance k agree exactly on at least one block (pigeonhole).
Each block buckets the hashes by its value, only hashes sharing a bucket are compared, and every pair within
distance k is found. Pairs become groups through connected components (scipy's: a union-find over the pairs).
pHash does not tell tiny line drawings apart: on MNIST 0.3% of random digit pairs are within 8 bits, the pairs
chain into one group of 68,000 digits and the search takes ~30 s on 2 cores; `chance_pairs` estimates how many
such chance pairs a set has, so that a caller can say near-duplicates mean nothing there (exact groups still do).

With embeddings (one feature vector per image, e.g. `cnnkit embed`), a pHash pair must also have cosine
similarity >= `min_cosine` to count (the network confirms it shows the same thing), and pairs up to twice
`max_distance` bits apart are admitted when the network says so (a crop or colour change that moved more bits).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cnnkit.data.images import rgb_to_grey
from cnnkit.data.sources import ImageSource
from cnnkit.errors import CnnkitError

__all__ = ["MAX_DISTANCE", "MIN_COSINE", "as_uint64", "chance_pairs", "find_duplicates", "hamming", "image_batches",
           "near_pairs", "phash", "phash_source"]

MAX_DISTANCE = 8  # bits of 64: copies measured at <= 2, different photos at >= 18 (module docstring)
MIN_COSINE = 0.95  # embedding cosine similarity that confirms a pair (used only with embeddings)
HASH_SIZE, DCT_SIZE = 8, 32
BATCH = 1024
MAX_EXACT_GROUP = 2048


# ---------------------------------------------------------------- hashing

def image_batches(source: ImageSource, indices: np.ndarray, channels: int = 3,
                  batch: int = BATCH) -> Iterator[tuple[np.ndarray, list[torch.Tensor]]]:
    """(positions in `indices`, images (C, H, W) uint8) a batch at a time; in-memory sources are sliced (fast),
    files are decoded by a few threads."""
    indices = np.asarray(indices, dtype=np.int64)
    for start in range(0, len(indices), batch):
        positions = np.arange(start, min(start + batch, len(indices)))
        chunk = indices[positions]
        if source.arrays is not None:
            imgs = source.arrays[torch.as_tensor(chunk)]  # (n, C, H, W)
            if imgs.shape[1] != channels:
                imgs = imgs.expand(-1, 3, -1, -1) if channels == 3 else rgb_to_grey(imgs)
            yield positions, list(imgs)
        else:
            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                yield positions, list(pool.map(lambda i: source.load(int(i), channels), chunk))


def _thumbnail(imgs: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W) uint8 → (n, 32, 32) float64 grey, resized with antialiasing."""
    grey = rgb_to_grey(imgs) if imgs.shape[1] == 3 else imgs[:, :1]
    small = F.interpolate(grey.float(), size=(DCT_SIZE, DCT_SIZE), mode="bilinear", antialias=True,
                          align_corners=False)
    return small[:, 0].double()


def phash(imgs: torch.Tensor) -> np.ndarray:
    """(n, C, H, W) uint8 images of one size (C = 1 or 3) → (n,) uint64 perceptual hashes."""
    if imgs.ndim != 4 or imgs.shape[1] not in (1, 3):
        raise CnnkitError(f"phash needs (n, 1 or 3, H, W) images, got shape {tuple(imgs.shape)}")
    coeffs = scipy.fft.dctn(_thumbnail(imgs).numpy(), type=2, norm="ortho", axes=(1, 2))
    low = coeffs[:, :HASH_SIZE, :HASH_SIZE].reshape(len(imgs), HASH_SIZE * HASH_SIZE)  # (n, 64), DC first
    median = np.median(low[:, 1:], axis=1, keepdims=True)
    bits = low > median
    bits[:, 0] = False  # the DC term: brightness, not structure
    return _pack(bits)


def _pack(bits: np.ndarray) -> np.ndarray:
    """(n, 64) bool → (n,) uint64, the first bit the most significant."""
    return np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)


def as_uint64(hashes: np.ndarray) -> np.ndarray:
    """(N,) uint64, or (N, 8) uint8 bytes (big-endian) → (N,) uint64."""
    hashes = np.asarray(hashes)
    if hashes.ndim == 2 and hashes.shape[1] == 8 and hashes.dtype == np.uint8:
        return np.ascontiguousarray(hashes).view(">u8")[:, 0].astype(np.uint64)
    if hashes.ndim == 1 and np.issubdtype(hashes.dtype, np.integer):
        return hashes.astype(np.uint64)
    raise CnnkitError(f"perceptual hashes must be (N,) uint64 or (N, 8) uint8, got {hashes.dtype} {hashes.shape}")


def phash_source(source: ImageSource, indices: np.ndarray | None = None) -> np.ndarray:
    """pHash of items `indices` (default: all) of `source` → (n,) uint64."""
    indices = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64)
    out = np.zeros(len(indices), dtype=np.uint64)
    for positions, imgs in image_batches(source, indices, channels=3):
        if len({tuple(i.shape) for i in imgs}) == 1:
            out[positions] = phash(torch.stack(imgs))
        else:  # photos of many sizes: thumbnails one by one, one DCT for the batch
            out[positions] = phash(torch.stack([_resize_one(i) for i in imgs]))
    return out


def _resize_one(img: torch.Tensor) -> torch.Tensor:
    """(C, H, W) uint8 → (1, 32, 32) uint8 grey thumbnail (phash of it equals phash of the image up to rounding)."""
    return _thumbnail(img[None]).round().clamp(0, 255).to(torch.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of uint64 hashes (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


# ---------------------------------------------------------------- pairs

def _block_keys(hashes: np.ndarray, radius: int) -> Iterator[np.ndarray]:
    """For each of radius + 1 blocks of bits, every hash's value on that block (N,) int64. Bit 0 (the DC bit,
    always 0) is left out; block b takes bits b+1, b+1+m, b+1+2m, ... (m blocks), so that every block mixes low
    and higher frequencies: contiguous blocks of the lowest frequencies are skewed and make crowded buckets (on
    MNIST strided blocks give 580 million candidate pairs at radius 8 instead of 1,000 million)."""
    bits = np.unpackbits(hashes.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)  # (N, 64), bit 0 first
    m = min(radius + 1, 63)
    for b in range(m):
        positions = np.arange(1, 64)[b::m]
        yield bits[:, positions].astype(np.int64) @ (np.int64(1) << np.arange(len(positions), dtype=np.int64))


def _bucket_pairs(keys: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every pair (i < j) of positions with equal keys, a bucket (or rows of a big one) at a time."""
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    for members in np.split(order, bounds):
        s = len(members)
        if s < 2:
            continue
        members = np.sort(members)
        rows_per_chunk = max(1, 4_000_000 // s)
        for start in range(0, s - 1, rows_per_chunk):
            rows = np.arange(start, min(start + rows_per_chunk, s - 1))
            counts = s - 1 - rows  # row r pairs with r+1 .. s-1
            i = np.repeat(rows, counts)
            j = i + 1 + np.arange(len(i)) - np.repeat(np.cumsum(counts) - counts, counts)
            yield members[i], members[j]


def near_pairs(hashes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j, distance) with i < j and Hamming distance <= radius, found by multi-index hashing
    (radius + 1 blocks, one exact match needed); each pair once."""
    hashes = as_uint64(hashes)
    found_i, found_j, found_d = [], [], []
    for keys in _block_keys(hashes, radius):
        for i, j in _bucket_pairs(keys):
            d = hamming(hashes[i], hashes[j])
            close = d <= radius
            found_i.append(i[close])
            found_j.append(j[close])
            found_d.append(d[close])
    if not found_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    i, j, d = np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)
    _, first = np.unique(i * len(hashes) + j, return_index=True)  # a pair can match in several blocks
    return i[first], j[first], d[first]


def _exact_pairs(hashes_exact: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Chains (a, b), (b, c) ... through each set of equal pixel hashes."""
    _, inverse = np.unique(np.asarray(hashes_exact, dtype=object).astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    same = inverse[order][1:] == inverse[order][:-1]
    return order[:-1][same], order[1:][same]


def _cosine(embeddings: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.einsum("nd,nd->n", x[i], x[j])


# ---------------------------------------------------------------- groups

def find_duplicates(hashes_exact: list[str] | None, phashes: np.ndarray, splits: list[str],
                    embeddings: np.ndarray | None = None, max_distance: int = MAX_DISTANCE,
                    min_cosine: float = MIN_COSINE) -> list[dict]:
    """Groups of duplicate items: [{"items": [indices], "kind": "exact"|"near", "crosses_splits": bool,
    "splits": [distinct split names], "distance": the largest pHash distance inside the group}], the groups
    that cross splits (leaks) first, then the largest.

    Exact: equal pixel hashes. Near: pHash Hamming distance <= max_distance; with `embeddings` (N, D), a near
    pair needs cosine >= min_cosine, and pairs up to 2 * max_distance bits apart are admitted by the cosine.
    """
    hashes = as_uint64(phashes)
    n = len(hashes)
    if len(splits) != n or (hashes_exact is not None and len(hashes_exact) != n):
        raise CnnkitError(f"find_duplicates: {n} perceptual hashes, {len(splits)} split names and "
                          f"{n if hashes_exact is None else len(hashes_exact)} pixel hashes; give one per item")
    radius = max_distance if embeddings is None else 2 * max_distance
    i, j, _ = near_pairs(hashes, radius)
    if embeddings is not None:
        keep = _cosine(embeddings, i, j) >= min_cosine
        i, j = i[keep], j[keep]
    if hashes_exact is not None:
        ei, ej = _exact_pairs(hashes_exact)
        i, j = np.concatenate([i, ei]), np.concatenate([j, ej])
    return _groups(i, j, hashes, hashes_exact, list(splits))


def _groups(i: np.ndarray, j: np.ndarray, hashes: np.ndarray, hashes_exact: list[str] | None,
            splits: list[str]) -> list[dict]:
    n = len(hashes)
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component, minlength=n)
    edge_distance = hamming(hashes[i], hashes[j])
    groups = []
    for c in np.flatnonzero(sizes >= 2):
        items = np.flatnonzero(component == c)
        names = sorted({splits[k] for k in items})
        exact = hashes_exact is not None and len({hashes_exact[k] for k in items}) == 1
        groups.append({"items": items.tolist(), "kind": "exact" if exact else "near",
                       "crosses_splits": len(names) > 1, "splits": names,
                       "distance": _max_distance(hashes[items], edge_distance[component[i] == c])})
    return sorted(groups, key=lambda g: (not g["crosses_splits"], -len(g["items"]), g["items"][0]))


def _max_distance(group: np.ndarray, edges: np.ndarray) -> int:
    """The largest Hamming distance between two hashes of a group (pairwise, in row chunks); for a group of more
    than MAX_EXACT_GROUP items (a chain through a crowded hash space), the largest over the pairs that linked it."""
    if len(group) > MAX_EXACT_GROUP:
        return int(edges.max(initial=0))
    best = 0
    for start in range(0, len(group), 512):
        best = max(best, int(hamming(group[start:start + 512, None], group[None, :]).max()))
    return best


def chance_pairs(phashes: np.ndarray, max_distance: int = MAX_DISTANCE, samples: int = 200_000,
                 seed: int = 0) -> float:
    """The expected number of pairs of *unrelated* items within `max_distance` bits, estimated from random pairs:
    N(N-1)/2 times the fraction of sampled pairs that close. Near 0 on photos (hymenoptera: no sampled pair within
    8 bits); large where pHash cannot tell the images apart (MNIST: 0.3% of random digit pairs, about 7 million
    pairs, and one chain of 68,000 digits), and near-duplicate groups then mean nothing without embeddings."""
    hashes = as_uint64(phashes)
    n = len(hashes)
    if n < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, n, samples), rng.integers(0, n, samples)
    distinct = i != j
    close = hamming(hashes[i[distinct]], hashes[j[distinct]]) <= max_distance
    return float(close.mean() * n * (n - 1) / 2) if distinct.any() else 0.0
