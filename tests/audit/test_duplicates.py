"""Near-duplicates and leaks: pHash against a direct computation and its invariances, the multi-index search
against brute force, the groups, and the acceptance test on real photos (hymenoptera with copies in test/)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import torch
from PIL import Image

from cnnkit.audit.duplicates import (
    MAX_DISTANCE,
    as_uint64,
    chance_pairs,
    find_duplicates,
    hamming,
    near_pairs,
    phash,
    phash_source,
)
from cnnkit.data.fingerprint import pixel_hashes
from cnnkit.data.sources import from_arrays, from_folder
from cnnkit.errors import CnnkitError


def photo(rng: np.random.Generator, width: int = 160, height: int = 120) -> np.ndarray:
    """(H, W, 3) uint8: smooth random colour blobs plus grain, a stand-in for a photo."""
    coarse = Image.fromarray(rng.integers(0, 256, (height // 10, width // 10, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float64)
    return np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)


def chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a)).permute(2, 0, 1)


def test_phash_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    img = chw(photo(rng))
    grey = (img.double() * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0)  # luma, (H, W)
    small = torch.nn.functional.interpolate(grey[None, None], size=(32, 32), mode="bilinear", antialias=True)[0, 0]
    low = scipy.fft.dctn(small.numpy(), norm="ortho")[:8, :8].ravel()
    bits = low > np.median(low[1:])
    bits[0] = False
    got = int(phash(img[None])[0])
    expected = int("".join("1" if b else "0" for b in bits), 2)
    assert hamming(np.uint64(got), np.uint64(expected)) <= 2  # PIL's fixed-point luma vs float luma
    assert got >> 63 == 0 and bin(got).count("1") == 31  # DC bit 0; 31 of 63 AC coefficients above their median


def test_phash_is_stable_under_reencoding_and_resizing_and_apart_for_different_images() -> None:
    rng = np.random.default_rng(1)
    originals = [photo(rng) for _ in range(12)]
    hashes = np.concatenate([phash(chw(a)[None]) for a in originals])
    for a, h in zip(originals, hashes):
        buffer = io.BytesIO()
        Image.fromarray(a).save(buffer, format="JPEG", quality=70)
        jpeg = np.asarray(Image.open(buffer).convert("RGB"))
        resized = np.asarray(Image.fromarray(a).resize((144, 108)))
        for copy in (jpeg, resized):
            assert hamming(phash(chw(copy)[None])[0], h) <= MAX_DISTANCE // 2
    apart = hamming(hashes[:, None], hashes[None, :])[np.triu_indices(12, 1)]
    assert apart.min() > MAX_DISTANCE


def test_as_uint64_reads_bytes_big_endian() -> None:
    hashes = np.array([0x0123456789ABCDEF, 1], dtype=np.uint64)
    as_bytes = hashes.astype(">u8").view(np.uint8).reshape(2, 8)
    np.testing.assert_array_equal(as_uint64(as_bytes), hashes)
    with pytest.raises(CnnkitError):
        as_uint64(np.zeros((2, 4), dtype=np.uint8))


def _planted(rng: np.random.Generator, n: int, flips: int) -> np.ndarray:
    """Random 63-bit hashes (bit 63 of the uint64 = the DC bit, 0), plus a copy of each of the first 100 with up to
    `flips` bits flipped."""
    base = rng.integers(0, 2**63, n, dtype=np.uint64)
    copies = base[:100].copy()
    for k in range(100):
        for bit in rng.choice(63, rng.integers(0, flips + 1), replace=False):
            copies[k] ^= np.uint64(1) << np.uint64(bit)
    return np.concatenate([base, copies])


@pytest.mark.parametrize("radius", [0, 3, 8])
def test_multi_index_search_equals_brute_force(radius: int) -> None:
    rng = np.random.default_rng(radius)
    hashes = _planted(rng, 1500, flips=10)
    i, j, d = near_pairs(hashes, radius)
    full = hamming(hashes[:, None], hashes[None, :])
    bi, bj = np.nonzero(np.triu(full <= radius, 1))
    assert sorted(zip(i.tolist(), j.tolist())) == sorted(zip(bi.tolist(), bj.tolist()))
    np.testing.assert_array_equal(d, full[i, j])


def test_find_duplicates_groups_exact_and_near_items() -> None:
    rng = np.random.default_rng(2)
    hashes = rng.integers(0, 2**63, 10, dtype=np.uint64)
    hashes[3] = hashes[0]  # same picture, exactly
    hashes[7] = hashes[5] ^ np.uint64(0b1011)  # 3 bits apart
    hashes[8] = hashes[7] ^ np.uint64(0b11 << 20)  # 2 bits from 7, 5 from 5: one chain
    exact = [f"x{k}" for k in range(10)]
    exact[3] = exact[0]
    splits = ["train"] * 6 + ["test"] * 4
    groups = find_duplicates(exact, hashes, splits)
    assert [g["items"] for g in groups] == [[5, 7, 8], [0, 3]]
    leak, same = groups
    assert leak == {"items": [5, 7, 8], "kind": "near", "crosses_splits": True, "splits": ["test", "train"],
                    "distance": 5}
    assert same == {"items": [0, 3], "kind": "exact", "crosses_splits": False, "splits": ["train"], "distance": 0}
    tight = find_duplicates(exact, hashes, splits, max_distance=2)  # only 7-8 (2 bits) stays near
    assert [(g["items"], g["crosses_splits"]) for g in tight] == [([0, 3], False), ([7, 8], False)]


def test_exact_pixel_hashes_group_even_when_phashes_differ() -> None:
    hashes = np.array([0, 2**62 - 1, 12345], dtype=np.uint64)
    groups = find_duplicates(["a", "a", "b"], hashes, ["train", "val", "val"], max_distance=2)
    assert groups == [{"items": [0, 1], "kind": "exact", "crosses_splits": True, "splits": ["train", "val"],
                       "distance": 62}]


def test_embeddings_confirm_and_extend_pairs() -> None:
    hashes = np.array([0, 0b111, 0, 0xFFFF], dtype=np.uint64)  # 0-1: 3 bits; 0-2: 0 bits; 0-3: 16 bits
    emb = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [1.0, 0.02]])  # 2 looks different; 1 and 3 look alike
    splits = ["train", "test", "test", "test"]
    plain = find_duplicates(None, hashes, splits, max_distance=8)
    assert [g["items"] for g in plain] == [[0, 1, 2]]
    confirmed = find_duplicates(None, hashes, splits, embeddings=emb, max_distance=8, min_cosine=0.99)
    assert [g["items"] for g in confirmed] == [[0, 1, 3]]  # 2 dropped by the cosine, 3 admitted at 16 bits
    assert confirmed[0]["distance"] == 16


def test_find_duplicates_refuses_mismatched_lengths() -> None:
    with pytest.raises(CnnkitError, match="one per item"):
        find_duplicates(["a", "b"], np.zeros(3, dtype=np.uint64), ["train"] * 3)


def test_chance_pairs() -> None:
    rng = np.random.default_rng(3)
    assert chance_pairs(rng.integers(0, 2**63, 5000, dtype=np.uint64)) == 0.0
    crowded = rng.integers(0, 16, 5000).astype(np.uint64)  # 4 bits of 64 vary: every pair is within 4 bits
    assert chance_pairs(crowded) == pytest.approx(5000 * 4999 / 2, rel=0.01)


def test_phash_source_on_arrays_and_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    images = np.stack([photo(rng, 64, 48) for _ in range(4)])  # (4, H, W, 3)
    source = from_arrays(images, np.array([0, 1, 0, 1]))
    np.testing.assert_array_equal(phash_source(source), phash(torch.from_numpy(images).permute(0, 3, 1, 2)))
    for k, a in enumerate(images):
        (tmp_path / str(k % 2)).mkdir(exist_ok=True)
        Image.fromarray(a if k else a[:40, :60]).save(tmp_path / str(k % 2) / f"{k}.png")  # sizes differ
    folder = from_folder(tmp_path)
    got = phash_source(folder, np.arange(len(folder)))
    expected = [phash(folder.load(k, 3)[None])[0] for k in range(len(folder))]
    assert max(int(hamming(a, b)) for a, b in zip(got, expected)) <= 2  # via a rounded thumbnail


# ---------------------------------------------------------------- acceptance: real photos

def leaky_copy(hymenoptera: Path, root: Path) -> list[tuple[str, str]]:
    """root/{train,val} linking to hymenoptera's; root/test/<class>/ gets 20 training JPEGs: 10 re-encoded as JPEG
    quality 70, 10 resized by 0.9. Returns (copy id, original id) pairs."""
    for split in ("train", "val"):
        for folder in sorted(p for p in (hymenoptera / split).iterdir() if p.is_dir()):
            (root / split / folder.name).mkdir(parents=True)
            for f in sorted(folder.iterdir()):
                (root / split / folder.name / f.name).symlink_to(f.resolve())
    originals = sorted((hymenoptera / "train").glob("*/*.jpg"))
    pairs = []
    for k, path in enumerate(originals[:: len(originals) // 20][:20]):
        out = root / "test" / path.parent.name / f"copy{k}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            im = im.convert("RGB")
            if k < 10:
                im.save(out, quality=70)
            else:
                im.resize((round(im.width * 0.9), round(im.height * 0.9))).save(out)
        pairs.append((out.relative_to(root).as_posix(), path.relative_to(hymenoptera).as_posix()))
    return pairs


def split_names(source) -> list[str]:
    names = [""] * len(source)
    for split, indices in source.presplit.items():
        for i in indices:
            names[int(i)] = split
    return names


@pytest.mark.slow
def test_acceptance_copies_in_test_are_found_and_the_clean_set_has_no_group(data_root: Path, tmp_path: Path) -> None:
    hymenoptera = data_root / "hymenoptera"
    if not hymenoptera.is_dir():
        pytest.skip(f"hymenoptera not found in {data_root}")
    clean = from_folder(hymenoptera)
    clean_hashes = phash_source(clean)
    assert find_duplicates(pixel_hashes(clean), clean_hashes, split_names(clean)) == []
    pairs = leaky_copy(hymenoptera, tmp_path)
    leaky = from_folder(tmp_path)
    groups = find_duplicates(pixel_hashes(leaky), phash_source(leaky), split_names(leaky))
    index = {name: i for i, name in enumerate(leaky.ids)}
    expected = sorted(sorted([index[c], index[o]]) for c, o in pairs)
    assert sorted(g["items"] for g in groups) == expected  # every copy, and nothing else
    assert all(g["crosses_splits"] and g["splits"] == ["test", "train"] for g in groups)
