"""Near-duplicate images, found in spaces where "the same picture" means something.

A trained classifier's penultimate features collapse per class: two different trousers
score 0.999 there, so a fixed cosine cut on them finds "duplicates" everywhere. Here:

- **Perceptual hashes** of the decoded pixels (``phash``, ``dhash``: :mod:`mlcore.hashes`).
  Exact, re-encoded and resized copies land within a few bits of each other; different
  photos differ in about half of the 64. Pairs come from a blockwise all-pairs Hamming scan.
- **A pretrained backbone's features** (an ImageNet MobileNetV2 or ResNet state_dict that
  never saw the project's labels), for near copies that a hash misses (crops): cosine
  similarity of L2-normalised global-pooled features.

Thresholds are not constants: :func:`calibrate` makes synthetic copies of a sample of the
images themselves (JPEG quality 60, half size, a light crop), measures how far a copy lies
from its original (positives) and how far each image lies from its nearest *other* image
(negatives), and picks the cut that best separates the two for the hash (Youden's J:
recall on the copies minus the share of images with a different image that close; the two
are far apart). For the features, where crops and look-alike photos overlap, the cut is the
best recall on the copies that keeps the expected number of false pairs (pairs of different
images inside the cut, estimated from random pairs) at most 1 % of the number of images.
The app shows the cuts and these figures.

Knows nothing of Django; numpy, scipy, Pillow, and torch/torchvision only for features.
"""
from __future__ import annotations

import io
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from . import storage
from .hashes import BITS, BLOCK, _popcount, hashes_of, nearest_distance
from .hashes import dhash, hamming_pairs, hash_bytes, phash  # noqa: F401 - callers reach them here
from .images import CorruptImage, decode

TRANSFORMS = ("reencoded", "resized", "cropped")  # what calibrate() makes copies with


def describe(sources: Sequence, *, model=None, image_size: int = 128, batch_size: int = 64,
             read: Callable[[object], bytes] | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """One streaming pass over images (URIs, or anything ``read`` turns into bytes): their
    hashes, and with ``model`` their features, without holding more than a batch decoded.

    Returns ``{"phash", "dhash": int64 (N,), "ok": bool (N,), "errors": {index: why},
    "features": float32 (N, D) or None}`` (rows that failed are zero)."""
    read = read or (lambda uri: storage.read_bytes(storage.to_uri(uri)))
    n = len(sources)
    out = {"phash": np.zeros(n, dtype=np.int64), "dhash": np.zeros(n, dtype=np.int64),
           "ok": np.zeros(n, dtype=bool), "errors": {}, "features": None}
    batch: list[tuple[int, Image.Image]] = []

    def flush():
        if model is not None and batch:
            f = features_of(model, [im for _, im in batch], image_size=image_size, batch_size=batch_size)
            if out["features"] is None:
                out["features"] = np.zeros((n, f.shape[1]), dtype=np.float32)
            out["features"][[i for i, _ in batch]] = f
        batch.clear()

    for i, src in enumerate(sources):
        try:
            img = decode(read(src))
            out["phash"][i], out["dhash"][i] = hashes_of(img)
            out["ok"][i] = True
            if model is not None:
                batch.append((i, img))
        except (CorruptImage, OSError, ValueError) as e:
            out["errors"][i] = str(e) or type(e).__name__
        if len(batch) >= batch_size:
            flush()
        if progress and (i + 1) % 500 == 0:
            progress(i + 1, n)
    flush()
    return out


# --------------------------------------------------------------------------- features

def load_backbone(weights_uri: str, arch: str = "mobilenet_v2"):
    """A torchvision backbone (no classifier) with a torchvision-keyed state_dict, in eval mode."""
    import torch
    import torchvision

    from .models import load_state_dict

    model = getattr(torchvision.models, arch)(weights=None)
    sd = load_state_dict(weights_uri)
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(("classifier.", "fc."))]
    if missing:
        raise ValueError(f"{weights_uri} does not fit {arch}: missing {missing[:5]}")
    if arch.startswith("resnet"):
        model.fc = torch.nn.Identity()
    else:
        model.classifier = torch.nn.Identity()
    return model.eval()


def features_of(model, images: Sequence[Image.Image], *, image_size: int = 128, batch_size: int = 64) -> np.ndarray:
    """(N, D) float32 unit rows: the backbone's global-pooled features of ``images`` squashed to
    ``image_size`` x ``image_size`` (the whole picture: a centre crop would hide a crop's edges)."""
    import torch

    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    rows = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            batch = np.stack([(np.asarray(im.convert("RGB").resize((image_size, image_size), Image.BILINEAR),
                                          dtype=np.float32) / 255.0 - mean) / std for im in images[s:s + batch_size]])
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
            rows.append(model(x).float().numpy())
    f = np.concatenate(rows) if rows else np.zeros((0, 1), dtype=np.float32)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def cosine_pairs(feats: np.ndarray, threshold: float, *, valid: np.ndarray | None = None,
                 exact: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, similarity)`` for pairs ``i < j`` of unit rows with cosine >= ``threshold``.

    An all-pairs blockwise scan, unless the set is large (``exact=None``: more than
    mlcore.cluster's ``EXACT_MAX_PRODUCTS`` pairs, about 63,000 images): then each row's
    ``PAIR_K`` nearest neighbours (:func:`mlcore.cluster.knn`, an inverted file tuned to its
    recall) give the pairs, and a row whose ``PAIR_K``-th neighbour is still inside the cut
    (it may have more partners) is scanned against all rows.
    """
    from .cluster import EXACT_MAX_PRODUCTS

    idx = np.arange(len(feats)) if valid is None else np.flatnonzero(valid)
    e = np.asarray(feats, dtype=np.float32)[idx]
    if exact is False or (exact is None and len(e) ** 2 > EXACT_MAX_PRODUCTS):
        i, j, sim = _neighbour_pairs(e, threshold)
        return idx[i], idx[j], sim
    ii, jj, ss = [], [], []
    for s in range(0, len(e), BLOCK):
        sim = e[s:s + BLOCK] @ e[s:].T
        a, b = np.nonzero(sim >= threshold)
        keep = b > a
        ii.append(idx[s + a[keep]])
        jj.append(idx[s + b[keep]])
        ss.append(sim[a[keep], b[keep]])
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))
    return cat(ii, np.int64), cat(jj, np.int64), cat(ss, np.float32)


PAIR_K = 16  # neighbours per row that the large-set pair search keeps


def _neighbour_pairs(e: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs ``i < j`` inside the cut from each row's nearest neighbours, plus a full scan of
    the rows that have ``PAIR_K`` of them inside it; sorted by ``(i, j)`` as the blockwise scan."""
    from .cluster import knn

    n = len(e)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    nb, sims = knn(e, PAIR_K, exact=False)
    a, b, s = np.repeat(np.arange(n), nb.shape[1]), nb.ravel(), sims.ravel()
    parts = [(a[s >= threshold], b[s >= threshold], s[s >= threshold])]
    crowded = np.flatnonzero(sims[:, -1] >= threshold)
    for c in range(0, len(crowded), BLOCK):
        rows = crowded[c:c + BLOCK]
        sim = e[rows] @ e.T
        r, col = np.nonzero(sim >= threshold)
        keep = col != rows[r]
        parts.append((rows[r[keep]], col[keep], sim[r[keep], col[keep]]))
    i = np.concatenate([np.minimum(p, q) for p, q, _ in parts]).astype(np.int64)
    j = np.concatenate([np.maximum(p, q) for p, q, _ in parts]).astype(np.int64)
    sim = np.concatenate([v for _, _, v in parts]).astype(np.float32)
    _, first = np.unique(i * n + j, return_index=True)  # each pair once, in (i, j) order
    return i[first], j[first], sim[first]


# --------------------------------------------------------------------------- calibration

def copies(img: Image.Image, kind: str) -> Image.Image:
    """A synthetic near copy of ``img``: ``reencoded`` (JPEG quality 60), ``resized`` (half the
    size) or ``cropped`` (6 % off each side)."""
    if kind == "reencoded":
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=60)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "resized":
        return img.resize((max(8, img.width // 2), max(8, img.height // 2)), Image.BILINEAR)
    if kind == "cropped":
        dx, dy = int(img.width * 0.06), int(img.height * 0.06)
        return img.crop((dx, dy, img.width - dx, img.height - dy))
    raise ValueError(f"unknown copy kind {kind!r}; choose one of {', '.join(TRANSFORMS)}")


def choose_cut(positives: np.ndarray, negatives: np.ndarray, candidates: np.ndarray, *,
               higher_is_closer: bool) -> dict:
    """The candidate cut that maximises recall on ``positives`` minus the share of ``negatives``
    inside it (Youden's J; ties go to the stricter cut), with both figures."""
    pos, neg = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    best = None
    for t in candidates:
        inside = (lambda v: v >= t) if higher_is_closer else (lambda v: v <= t)
        recall = float(inside(pos).mean()) if len(pos) else 0.0
        fpr = float(inside(neg).mean()) if len(neg) else 0.0
        if best is None or recall - fpr > best["j"] + 1e-12:
            best = {"threshold": float(t), "recall": recall, "false_positive_rate": fpr, "j": recall - fpr}
    best = best or {"threshold": float(candidates[0]), "recall": 0.0, "false_positive_rate": 0.0, "j": 0.0}
    best.update(positives=int(len(pos)), negatives=int(len(neg)))
    return best


def calibrate_hash(images: Sequence[Image.Image], hashes: np.ndarray, *, kinds=TRANSFORMS) -> dict:
    """The phash cut (max Hamming distance) from synthetic copies of ``images`` (a sample of the
    set) against the nearest-other-image distances of the whole set's ``hashes``; recall per kind."""
    orig = np.array([phash(im) for im in images], dtype=np.int64).view(np.uint64)
    by_kind = {}
    for kind in kinds:
        cp = np.array([phash(copies(im, kind)) for im in images], dtype=np.int64).view(np.uint64)
        by_kind[kind] = _popcount(orig ^ cp).astype(np.int64)
    # Crops move a hash far: the cut is set on the copies a hash is meant for.
    pos = np.concatenate([by_kind[k] for k in kinds if k != "cropped"] or [np.zeros(0)])
    neg = nearest_distance(hashes)
    cut = choose_cut(pos, neg, np.arange(0, 25), higher_is_closer=False)
    cut["threshold"] = int(cut["threshold"])
    cut["recall_by_kind"] = {k: float((v <= cut["threshold"]).mean()) if len(v) else None for k, v in by_kind.items()}
    return cut


FALSE_PAIR_BUDGET = 0.01  # expected false feature pairs: at most 1 % of the number of images
PAIR_SAMPLE = 1_000_000   # random pairs of different images that estimate it on a large set


def pair_similarities(feats: np.ndarray, rows: np.ndarray, *, max_pairs: int = PAIR_SAMPLE, seed: int = 0
                      ) -> tuple[np.ndarray, int]:
    """Cosine similarities of pairs of ``rows`` (all pairs when there are at most ``max_pairs``,
    else that many random ones) and the number of pairs there are in all."""
    e = np.asarray(feats, dtype=np.float32)[np.asarray(rows, dtype=np.int64)]
    n = len(e)
    total = n * (n - 1) // 2
    if total <= max_pairs:
        out = []
        for s in range(0, n, BLOCK):
            block = e[s:s + BLOCK] @ e[s:].T  # row r of the block is row s + r; column c is row s + c
            out.append(block[np.triu_indices(len(block), 1, m=block.shape[1])])
        return (np.concatenate(out) if out else np.zeros(0, np.float32)), total
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, max_pairs)
    j = (i + rng.integers(1, n, max_pairs)) % n  # never i itself
    sims = np.concatenate([np.sum(e[i[k:k + 100_000]] * e[j[k:k + 100_000]], axis=1)
                           for k in range(0, max_pairs, 100_000)])
    return sims, total


def calibrate_features(model, images: Sequence[Image.Image], feats: np.ndarray, *, image_size: int = 128,
                       kinds=TRANSFORMS, negative_rows: np.ndarray | None = None,
                       budget: float = FALSE_PAIR_BUDGET, seed: int = 0) -> dict:
    """The cosine cut of the features: the best recall on synthetic copies (all kinds) of
    ``images`` such that the expected number of pairs of *different* images inside the cut is
    at most ``budget`` x the number of images.

    That number is the share of pairs of ``negative_rows`` (pass the rows without a hash copy:
    copies the hash found are not false pairs) above the cut, times the number of pairs: on a
    large set from a sample of random pairs, which a few real near copies barely touch. (The
    nearest other image of each image is no measure here: crops and look-alike garments
    overlap, and a cut chosen on it lets every image have a false partner.)"""
    orig = features_of(model, list(images), image_size=image_size)
    by_kind = {}
    for kind in kinds:
        cp = features_of(model, [copies(im, kind) for im in images], image_size=image_size)
        by_kind[kind] = np.sum(orig * cp, axis=1)
    pos = np.concatenate(list(by_kind.values()) or [np.zeros(0)])
    rows = np.arange(len(feats)) if negative_rows is None else np.asarray(negative_rows, dtype=np.int64)
    sims, total = pair_similarities(feats, rows, seed=seed)
    allowed = budget * len(feats)
    best = None
    for t in np.round(np.arange(0.80, 0.9995, 0.0025), 4):
        share = float((sims >= t).mean()) if len(sims) else 0.0
        expected = share * total
        recall = float((pos >= t).mean()) if len(pos) else 0.0
        if expected <= allowed and (best is None or recall > best["recall"] + 1e-12):
            best = {"threshold": float(t), "recall": recall, "false_positive_rate": share,
                    "expected_false_pairs": round(expected, 1)}
    if best is None:
        best = {"threshold": 0.9995, "recall": float((pos >= 0.9995).mean()) if len(pos) else 0.0,
                "false_positive_rate": 0.0, "expected_false_pairs": 0.0}
    best.update(positives=int(len(pos)), negative_pairs=int(len(sims)), pairs_in_all=int(total),
                false_pair_budget=round(allowed, 1))
    best["recall_by_kind"] = {k: float((v >= best["threshold"]).mean()) if len(v) else None
                              for k, v in by_kind.items()}
    return best


# --------------------------------------------------------------------------- pairs

def pair_kind(i: int, j: int, *, splits=None, labels=None) -> str:
    """``cross_split`` (a test image with a copy in train: leakage), ``label_conflict`` (both
    labelled, differently), both joined by ``+``, or ``duplicate``."""
    kind = []
    if splits is not None and splits[i] != splits[j]:
        kind.append("cross_split")
    if labels is not None and labels[i] >= 0 and labels[j] >= 0 and labels[i] != labels[j]:
        kind.append("label_conflict")
    return "+".join(kind) or "duplicate"


def rows_without_pairs(n: int, pairs, valid: np.ndarray | None = None) -> np.ndarray:
    """Rows (of ``n``, ``valid`` ones) that are in none of ``pairs`` (``(i, j, ...)`` arrays)."""
    paired = np.zeros(n, dtype=bool)
    paired[np.asarray(pairs[0], dtype=np.int64)] = True
    paired[np.asarray(pairs[1], dtype=np.int64)] = True
    keep = ~paired if valid is None else (~paired & np.asarray(valid, dtype=bool))
    return np.flatnonzero(keep)


def merge_pairs(hash_pairs, feature_pairs=None) -> list[tuple[int, int, float, str]]:
    """One row per image pair: ``(i, j, similarity, method)``, the hash's word first (similarity
    1 - distance / 64) else the features' cosine; most similar first."""
    out: dict[tuple[int, int], tuple[float, str]] = {}
    i, j, d = hash_pairs
    for a, b, dist in zip(i.tolist(), j.tolist(), d.tolist()):
        out[(a, b)] = (1.0 - dist / BITS, "hash")
    if feature_pairs is not None:
        for a, b, sim in zip(*(x.tolist() for x in feature_pairs)):
            out.setdefault((a, b), (float(sim), "features"))
    return sorted(((a, b, s, m) for (a, b), (s, m) in out.items()), key=lambda r: (-r[2], r[0], r[1]))
