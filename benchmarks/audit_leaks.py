"""Leak detection on real photos: hymenoptera with 20 training images copied into a test split.

Builds, in a temporary folder, hymenoptera's train/ and val/ (links to the originals) and a test/ split holding 20
training JPEGs: 10 re-encoded as JPEG quality 70 and 10 resized by 0.9 (PIL, bicubic, saved as JPEG quality 75).
Runs `cnnkit.audit.duplicates` (exact pixel hashes + pHash, `find_duplicates` at its default thresholds) on that
set and on the clean set, and prints: copies found (of 20), groups on the clean set, the pHash distances of the
copies to their originals and the smallest distances between different clean photos, the same for a dHash
(9x8 gradient signs) as a comparison, and the time.

    .venv/bin/python benchmarks/audit_leaks.py [--data PATH]   (default $CNNKIT_DATA or ../shared/data)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnkit.audit.duplicates import MAX_DISTANCE, find_duplicates, hamming, phash_source
from cnnkit.data.fingerprint import pixel_hashes
from cnnkit.data.images import rgb_to_grey
from cnnkit.data.sources import ImageSource, from_folder

N_COPIES = 20


def make_leaky_copy(hymenoptera: Path, root: Path) -> dict[str, str]:
    """root/{train,val} linking to hymenoptera's, root/test/<class>/ with 20 altered training JPEGs.
    Returns {test file id: original train id}."""
    for split in ("train", "val"):
        for cls in sorted(p.name for p in (hymenoptera / split).iterdir() if p.is_dir()):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((hymenoptera / split / cls).iterdir()):
                (root / split / cls / f.name).symlink_to(f.resolve())
    originals = sorted((hymenoptera / "train").glob("*/*.jpg"))
    chosen = originals[:: len(originals) // N_COPIES][:N_COPIES]
    copies = {}
    for k, path in enumerate(chosen):
        out = root / "test" / path.parent.name / f"copy{k}_{path.stem}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            im = im.convert("RGB")
            if k % 2 == 0:
                im.save(out, quality=70)
            else:
                im.resize((round(im.width * 0.9), round(im.height * 0.9))).save(out, quality=75)
        copies[out.relative_to(root).as_posix()] = path.relative_to(hymenoptera).as_posix()
    return copies


def splits_of(source: ImageSource) -> list[str]:
    names = [""] * len(source)
    for split, indices in source.presplit.items():
        for i in indices:
            names[int(i)] = split
    return names


def dhash_source(source: ImageSource) -> np.ndarray:
    """A 64-bit difference hash for comparison: grey 9x8 thumbnail, bit = left pixel > right pixel."""
    out = []
    for i in range(len(source)):
        grey = rgb_to_grey(source.load(i, 3))[None].float()
        small = F.interpolate(grey, size=(8, 9), mode="bilinear", antialias=True)[0, 0]
        out.append(np.packbits((small[:, :-1] > small[:, 1:]).numpy().ravel()).view(">u8")[0])
    return np.asarray(out, dtype=np.uint64)


def nearest_clean(hashes: np.ndarray, top: int = 5) -> list[int]:
    d = hamming(hashes[:, None], hashes[None, :])  # (N, N)
    iu = np.triu_indices(len(hashes), 1)
    return sorted(d[iu].tolist())[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CNNKIT_DATA") or
                        str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    args = parser.parse_args(argv)
    hymenoptera = Path(args.data) / "hymenoptera"
    if not hymenoptera.is_dir():
        print(f"hymenoptera not found at {hymenoptera}", file=sys.stderr)
        return 1
    torch.set_num_threads(2)
    clean = from_folder(hymenoptera)
    t0 = time.perf_counter()
    clean_hashes = phash_source(clean)
    clean_groups = find_duplicates(pixel_hashes(clean), clean_hashes, splits_of(clean))
    t_clean = time.perf_counter() - t0
    print(f"clean hymenoptera: {len(clean)} images, {len(clean_groups)} groups at max_distance {MAX_DISTANCE} "
          f"({t_clean:.2f} s incl. decoding)")
    for g in clean_groups:
        print("   ", g["kind"], g["distance"], [clean.ids[k] for k in g["items"]])
    print(f"smallest pHash distances between different clean photos: {nearest_clean(clean_hashes)}")
    print(f"smallest dHash distances between different clean photos: {nearest_clean(dhash_source(clean))}")
    with tempfile.TemporaryDirectory() as tmp:
        copies = make_leaky_copy(hymenoptera, Path(tmp))
        leaky = from_folder(tmp)
        t0 = time.perf_counter()
        hashes = phash_source(leaky)
        groups = find_duplicates(pixel_hashes(leaky), hashes, splits_of(leaky))
        t_leaky = time.perf_counter() - t0
        report_copies(leaky, copies, hashes, dhash_source(leaky), groups, t_leaky)
    return 0


def report_copies(leaky: ImageSource, copies: dict[str, str], hashes: np.ndarray, dhashes: np.ndarray,
                  groups: list[dict], seconds: float) -> None:
    index = {name: i for i, name in enumerate(leaky.ids)}
    pairs = [(index[c], index[o]) for c, o in copies.items()]
    leaks = [set(g["items"]) for g in groups if g["crosses_splits"]]
    found = sum(any({c, o} <= g for g in leaks) for c, o in pairs)
    false = [g for g in groups if not any(c in g["items"] for c, _ in pairs)]
    jpeg = [int(hamming(hashes[c], hashes[o])) for k, (c, o) in enumerate(pairs) if k % 2 == 0]
    resized = [int(hamming(hashes[c], hashes[o])) for k, (c, o) in enumerate(pairs) if k % 2 == 1]
    print(f"with {len(copies)} copies in test/: {found}/{len(copies)} copies found in groups crossing splits; "
          f"{len(groups)} groups, {len(false)} without a copy ({seconds:.2f} s incl. decoding)")
    print(f"pHash distance copy-original: JPEG q70 {sorted(jpeg)}; resized 0.9 {sorted(resized)}")
    djpeg = [int(hamming(dhashes[c], dhashes[o])) for k, (c, o) in enumerate(pairs) if k % 2 == 0]
    dresized = [int(hamming(dhashes[c], dhashes[o])) for k, (c, o) in enumerate(pairs) if k % 2 == 1]
    print(f"dHash distance copy-original: JPEG q70 {sorted(djpeg)}; resized 0.9 {sorted(dresized)}")


if __name__ == "__main__":
    sys.exit(main())
