"""Embedding neighbourhoods: complete-linkage clusters per class, kNN label agreement.

(Near duplicates are not found here: a trained model's embedding collapses per class, so
mlcore.duplicates uses perceptual hashes and pretrained features instead.)

All functions take L2-normalised embeddings (``embeddings.npz``'s ``emb``, any float
dtype) and work in cosine distance ``1 - a.b``. Memory is bounded: the per-class linkage
holds one condensed distance matrix of at most ``max_per_class`` images, and the kNN
scans take matrix products in row blocks, never an N x N matrix.
"""
from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

BLOCK = 1024  # rows per block in the blockwise scans: BLOCK x N float32 scores at a time


def _unit(emb: np.ndarray) -> np.ndarray:
    e = np.asarray(emb, dtype=np.float32)
    n = np.linalg.norm(e, axis=1, keepdims=True)
    return e / np.maximum(n, 1e-12)


def _complete_linkage(e: np.ndarray, threshold: float, method: str) -> np.ndarray:
    """Flat cluster labels (0-based) of the rows of ``e`` cut at cosine distance ``threshold``."""
    if len(e) == 1:
        return np.zeros(1, dtype=np.int64)
    d = 1.0 - e @ e.T  # float32 products (BLAS); the condensed copy is what linkage keeps
    np.clip(d, 0.0, 2.0, out=d)
    np.fill_diagonal(d, 0.0)
    condensed = squareform(d, checks=False).astype(np.float64)
    del d
    z = linkage(condensed, method=method)
    return fcluster(z, t=threshold, criterion="distance").astype(np.int64) - 1


def cluster_per_class(emb: np.ndarray, labels: np.ndarray, *, threshold: float = 0.5, method: str = "complete",
                      max_per_class: int = 10_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hierarchical clusters of each label's images; the largest cluster of a label is its core.

    Returns ``cluster_id`` (N,) int64, unique across the whole set (-1 for rows with label
    -1) and ``is_core`` (N,) bool. With complete linkage every cluster has a diameter of at
    most ``threshold`` (cosine distance), so an image outside its class core is further than
    ``threshold`` from at least one core member: a candidate mislabel or an odd image.

    Scale: the linkage of n images needs n(n-1)/2 float64 distances (6,000 -> 144 MB) and
    O(n^2) time. A class with more than ``max_per_class`` images is clustered on a seeded
    sample of that many; every other image joins the cluster of its nearest medoid (the
    member with the highest mean similarity to its cluster) if that medoid is within
    ``threshold / 2`` (then the triangle inequality keeps it roughly inside the cluster's
    diameter), else it becomes a singleton cluster, i.e. an outlier. At 1,000,000 images
    in 100 classes that is 100 linkages of 10,000 (0.4 GB each, one at a time) plus a
    blockwise nearest-medoid pass.
    """
    labels = np.asarray(labels)
    e = _unit(emb)
    n = len(labels)
    cluster_id = np.full(n, -1, dtype=np.int64)
    is_core = np.zeros(n, dtype=bool)
    rng = np.random.default_rng(seed)
    next_id = 0
    for c in np.unique(labels[labels >= 0]):
        rows = np.flatnonzero(labels == c)
        sample = np.sort(rng.choice(rows, max_per_class, replace=False)) if len(rows) > max_per_class else rows
        flat = _complete_linkage(e[sample], threshold, method)
        ids = flat.copy()
        if len(sample) < len(rows):
            rest = np.setdiff1d(rows, sample)
            k = flat.max() + 1
            medoids = np.empty(k, dtype=np.int64)
            for j in range(k):
                members = sample[flat == j]
                sims = e[members] @ e[members].mean(0)
                medoids[j] = members[np.argmax(sims)]
            assign = np.empty(len(rest), dtype=np.int64)
            for s in range(0, len(rest), BLOCK):
                sim = e[rest[s:s + BLOCK]] @ e[medoids].T
                best = sim.argmax(1)
                far = 1.0 - sim[np.arange(len(best)), best] > threshold / 2
                best[far] = k + s + np.flatnonzero(far)  # each far image is a cluster of its own
                assign[s:s + BLOCK] = best
            cluster_id[rest] = assign + next_id
        cluster_id[sample] = ids + next_id
        members = cluster_id[rows]
        uniq, counts = np.unique(members, return_counts=True)
        core = uniq[np.argmax(counts)]
        is_core[rows] = members == core
        # renumber this class's clusters densely from next_id
        _, dense = np.unique(members, return_inverse=True)
        cluster_id[rows] = dense + next_id
        next_id += len(uniq)
    return cluster_id, is_core


def cluster_table(cluster_id: np.ndarray, is_core: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """One row per cluster: ``id``, ``label``, ``size``, ``core`` (the arrays of clusters.npz)."""
    ids, first, size = np.unique(cluster_id[cluster_id >= 0], return_index=True, return_counts=True)
    rows = np.flatnonzero(cluster_id >= 0)[first]
    return {"id": ids, "label": np.asarray(labels)[rows], "size": size, "core": np.asarray(is_core)[rows]}


def knn(emb: np.ndarray, k: int, *, reference: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours (cosine) of every row among ``reference`` rows (default all), self excluded.

    Returns (indices (N, k) into the rows of ``emb``, similarities (N, k)), best first.
    Blockwise: memory is ``BLOCK x len(reference)``.
    """
    e = _unit(emb)
    ref = np.arange(len(e)) if reference is None else np.asarray(reference)
    k = min(k, len(ref) - 1)
    er = e[ref]
    idx = np.empty((len(e), k), dtype=np.int64)
    sims = np.empty((len(e), k), dtype=np.float32)
    pos_in_ref = np.full(len(e), -1)
    pos_in_ref[ref] = np.arange(len(ref))
    for s in range(0, len(e), BLOCK):
        sim = e[s:s + BLOCK] @ er.T
        rows = np.arange(s, min(s + BLOCK, len(e)))
        self_pos = pos_in_ref[rows]
        has = self_pos >= 0
        sim[np.flatnonzero(has), self_pos[has]] = -np.inf
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else \
            np.tile(np.arange(sim.shape[1]), (len(rows), 1))
        ps = np.take_along_axis(sim, part, 1)
        order = np.argsort(-ps, axis=1)
        idx[rows] = ref[np.take_along_axis(part, order, 1)]
        sims[rows] = np.take_along_axis(ps, order, 1)
    return idx, sims


def knn_label_distribution(emb: np.ndarray, labels: np.ndarray, k: int = 10,
                           num_classes: int | None = None) -> np.ndarray:
    """(N, C) share of each label among an image's ``k`` nearest labelled neighbours (self excluded)."""
    labels = np.asarray(labels)
    c = num_classes or int(labels.max()) + 1
    ref = np.flatnonzero(labels >= 0)
    idx, _ = knn(emb, k, reference=ref)
    dist = np.zeros((len(labels), c), dtype=np.float32)
    np.add.at(dist, (np.repeat(np.arange(len(labels)), idx.shape[1]), labels[idx].ravel()), 1.0)
    return dist / max(1, idx.shape[1])


def knn_agreement(emb: np.ndarray, labels: np.ndarray, k: int = 10) -> np.ndarray:
    """(N,) share of an image's ``k`` nearest labelled neighbours that carry its own label (NaN if unlabelled)."""
    labels = np.asarray(labels)
    dist = knn_label_distribution(emb, labels, k)
    out = np.full(len(labels), np.nan, dtype=np.float32)
    lab = labels >= 0
    out[lab] = dist[np.flatnonzero(lab), labels[lab]]
    return out
