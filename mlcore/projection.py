"""A 2-D map of embeddings, for the eye: which images sit together, which stray.

PCA of the L2-normalised embeddings (an SVD of a fixed random sample, then every point
projected): deterministic, a few hundred milliseconds at 100,000 x 512, no extra
dependency. UMAP separates classes better but costs minutes of CPU per map and numba;
where a project wants it, the map file format (``rows``, ``xy``) does not change.
Above ``max_points`` a seeded sample is drawn (stratified by nothing: uniform), so the
browser draws at most that many points.
"""
from __future__ import annotations

import numpy as np

METHOD = "pca"
MAX_POINTS = 100_000
FIT_SAMPLE = 20_000


def project_2d(emb: np.ndarray, *, max_points: int = MAX_POINTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, xy)``: the rows of ``emb`` on the map (sorted) and their float32 (n, 2)
    coordinates, scaled to [-1, 1] on the wider axis."""
    emb = np.asarray(emb)
    n = len(emb)
    if emb.ndim != 2 or n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.float32)
    rng = np.random.default_rng(seed)
    rows = np.arange(n) if n <= max_points else np.sort(rng.choice(n, max_points, replace=False))
    x = _normalised(emb[rows])
    if len(x) < 3 or x.shape[1] < 2:
        xy = np.zeros((len(x), 2), dtype=np.float32)
        xy[:, 0] = x[:, 0] if x.shape[1] else 0
        return rows, _scaled(xy)
    fit = x if len(x) <= FIT_SAMPLE else x[np.sort(rng.choice(len(x), FIT_SAMPLE, replace=False))]
    mean = fit.mean(axis=0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    axes = vt[:2]
    # A sign convention, so a map does not flip between two computations of it.
    axes *= np.where(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)] < 0, -1, 1)[:, None]
    return rows, _scaled(((x - mean) @ axes.T).astype(np.float32))


def _normalised(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=True)
    x[~np.isfinite(x)] = 0
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _scaled(xy: np.ndarray) -> np.ndarray:
    if not len(xy):
        return xy
    xy = xy - (xy.max(axis=0) + xy.min(axis=0)) / 2
    span = float(np.abs(xy).max())
    return (xy / span if span > 0 else xy).astype(np.float32)
