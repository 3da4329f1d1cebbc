"""Perceptual hashes of images, and the Hamming scans that pair them (for :mod:`mlcore.duplicates`).

``phash``: the signs of the low 8x8 DCT coefficients of a 32x32 grey thumbnail against their
median; ``dhash``: the signs of horizontal gradients of a 9x8 thumbnail. Exact, re-encoded and
resized copies land within a few bits of each other; different photos differ in about half
of the 64. Pairs come from a blockwise all-pairs Hamming scan (XOR + popcount). Hashes are
signed int64, what a database bigint holds.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .images import decode

BITS = 64
BLOCK = 256  # rows per block in the pair scans: BLOCK x N x 8 bytes at a time (120 MB at N = 60,000)


def _grey(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(img.convert("L").resize(size, Image.Resampling.BOX if hasattr(Image, "Resampling")
                                               else Image.BOX), dtype=np.float32)


def _pack(bits: np.ndarray) -> int:
    """64 booleans -> a signed int64 (what a database bigint holds)."""
    value = int(np.packbits(bits.astype(np.uint8).ravel()).view(">u8")[0])
    return value - (1 << 64) if value >= 1 << 63 else value


def phash(img: Image.Image) -> int:
    """The DCT hash: robust to re-encoding and resizing (it keeps only the lowest frequencies)."""
    from scipy.fft import dctn

    coeffs = dctn(_grey(img, (32, 32)), type=2, norm="ortho")[:8, :8].ravel()
    return _pack(coeffs > np.median(coeffs[1:]))  # the DC term (overall brightness) left out of the median


def dhash(img: Image.Image) -> int:
    """The gradient hash: where the brightness rises from left to right on a 9x8 thumbnail."""
    px = _grey(img, (9, 8))
    return _pack(px[:, 1:] > px[:, :-1])


def hashes_of(img: Image.Image) -> tuple[int, int]:
    return phash(img), dhash(img)


def hash_bytes(data: bytes) -> tuple[int, int]:
    """(phash, dhash) of an encoded image; :class:`~mlcore.images.CorruptImage` when it does not decode."""
    return hashes_of(decode(data))


# --------------------------------------------------------------------------- Hamming scans

def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1, dtype=np.uint8)


def hamming_pairs(hashes: np.ndarray, max_distance: int, *, valid: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, distance)`` for every pair ``i < j`` whose hashes differ in at most
    ``max_distance`` bits (rows where ``valid`` is False are never paired)."""
    h = np.asarray(hashes, dtype=np.int64).view(np.uint64)
    idx = np.arange(len(h)) if valid is None else np.flatnonzero(valid)
    h = h[idx]
    ii, jj, dd = [], [], []
    for s in range(0, len(h), BLOCK):
        d = _popcount(h[s:s + BLOCK, None] ^ h[None, s:])
        a, b = np.nonzero(d <= max_distance)
        keep = b > a  # b is relative to s, as is a: each pair once
        ii.append(idx[s + a[keep]])
        jj.append(idx[s + b[keep]])
        dd.append(d[a[keep], b[keep]].astype(np.int64))
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))
    return cat(ii, np.int64), cat(jj, np.int64), cat(dd, np.int64)


def nearest_distance(hashes: np.ndarray, *, valid: np.ndarray | None = None) -> np.ndarray:
    """Each row's Hamming distance to its nearest other row (BITS + 1 when alone)."""
    h = np.asarray(hashes, dtype=np.int64).view(np.uint64)
    idx = np.arange(len(h)) if valid is None else np.flatnonzero(valid)
    h = h[idx]
    out = np.full(len(h), BITS + 1, dtype=np.int64)
    for s in range(0, len(h), BLOCK):
        d = _popcount(h[s:s + BLOCK, None] ^ h[None, :]).astype(np.int64)
        d[np.arange(len(d)), s + np.arange(len(d))] = BITS + 1
        out[s:s + len(d)] = d.min(axis=1) if len(h) > 1 else BITS + 1
    return out
