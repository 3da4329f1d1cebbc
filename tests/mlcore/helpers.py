"""Tiny test data for mlcore's tests, written by the tests themselves."""
from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def make_image(colour, seed: int, size=(40, 32), fmt="PNG") -> bytes:
    """A noisy image of one dominant colour: easy for a tiny net to learn."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


def write_colour_set(root: Path, per_class: int = 8, test_per_class: int = 3, corrupt: int = 0) -> Path:
    """PNG images of 3 colours, a manifest (relative URIs) and optionally corrupt files; returns the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    n = 0
    for label, colour in COLOURS.items():
        for split, count in (("train", per_class), ("test", test_per_class)):
            for _ in range(count):
                name = f"img/{label}_{n:03d}.png"
                (root / name).parent.mkdir(exist_ok=True)
                (root / name).write_bytes(make_image(colour, n))
                rows.append((name, split, label))
                n += 1
    for k in range(corrupt):
        name = f"img/broken_{k}.jpg"
        (root / name).write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" if k % 2 == 0 else b"")
        rows.append((name, "train", "red"))
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uri", "split", "label"])
        w.writerows(rows)
    return root / "manifest.csv"


def read_idx(path: Path) -> np.ndarray:
    data = gzip.open(path, "rb").read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def clustered(n: int, d: int, centres: int, spread: float, seed: int) -> np.ndarray:
    """Unit vectors around ``centres`` random directions, neighbourhoods that overlap."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
