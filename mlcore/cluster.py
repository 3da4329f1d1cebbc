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


def _linkage(e: np.ndarray, method: str) -> np.ndarray:
    """The scipy linkage matrix of the rows of ``e`` in cosine distance (``len(e) >= 2``)."""
    d = 1.0 - e @ e.T  # float32 products (BLAS); the condensed copy is what linkage keeps
    np.clip(d, 0.0, 2.0, out=d)
    np.fill_diagonal(d, 0.0)
    condensed = squareform(d, checks=False).astype(np.float64)
    del d
    return linkage(condensed, method=method)


def cut_for_core_share(z: np.ndarray, n: int, share: float) -> float:
    """The lowest dendrogram height at which the largest cluster holds ``share`` of the ``n`` items.

    Complete-linkage heights only grow as clusters merge, and so does the largest cluster:
    walking the merges in order, the first one that builds a cluster of ``share * n`` items
    gives the cut, or the level just below it when the core there is nearer the share
    (merges come in jumps). Everything outside the core is further than the cut from at
    least one core member.
    """
    need = share * n
    if need <= 1 or not len(z):
        return 0.0
    largest = np.maximum.accumulate(z[:, 3])
    first = int(np.argmax(largest >= need))
    # merges come in jumps: take the level just before when its core is nearer the share
    if first > 0 and need - largest[first - 1] < largest[first] - need:
        return float(np.nextafter(z[first, 2], -np.inf)) if z[first - 1, 2] == z[first, 2] else \
            float((z[first - 1, 2] + z[first, 2]) / 2)
    return float(z[first, 2])


def _complete_linkage(e: np.ndarray, threshold: float | None, method: str,
                      share: float | None = None) -> tuple[np.ndarray, float]:
    """Flat cluster labels (0-based) of the rows of ``e`` and the cut used: ``threshold`` (cosine
    distance), or the one that gives the largest cluster ``share`` of the rows."""
    if len(e) == 1:
        return np.zeros(1, dtype=np.int64), 0.0 if threshold is None else float(threshold)
    z = _linkage(e, method)
    cut = float(threshold) if share is None else cut_for_core_share(z, len(e), share)
    return fcluster(z, t=cut, criterion="distance").astype(np.int64) - 1, cut


def cluster_per_class(emb: np.ndarray, labels: np.ndarray, *, threshold: float | None = 0.5,
                      method: str = "complete", max_per_class: int = 10_000, seed: int = 0,
                      core_share=None, return_cuts: bool = False):
    """Hierarchical clusters of each label's images; the largest cluster of a label is its core.

    Returns ``cluster_id`` (N,) int64, unique across the whole set (-1 for rows with label
    -1) and ``is_core`` (N,) bool; with ``return_cuts`` also ``cuts`` (C,) float, the cut used
    for each label value (NaN for labels without images). With complete linkage every cluster
    has a diameter of at most the cut (cosine distance), so an image outside its class core is
    further than the cut from at least one core member: a candidate mislabel or an odd image.

    The cut: ``threshold`` for every class, or, with ``core_share`` (a share, or one per label
    value), chosen per class from its own dendrogram (:func:`cut_for_core_share`): the
    height at which the core holds about that share of the class. A fixed cosine cut means
    nothing across embeddings (at 0.5 on ImageNet MobileNetV2 features of CIFAR-10, 98% of
    the images were "outliers"); a share does, and :func:`mlcore.suspects.score` sets it
    from the class's estimated rate of label errors.

    Scale: the linkage of n images needs n(n-1)/2 float64 distances (6,000 -> 144 MB) and
    O(n^2) time. A class with more than ``max_per_class`` images is clustered on a seeded
    sample of that many; every other image joins the cluster of its nearest medoid (the
    member with the highest mean similarity to its cluster) if that medoid is within
    half the cut (then the triangle inequality keeps it roughly inside the cluster's
    diameter), else it becomes a singleton cluster, i.e. an outlier. At 1,000,000 images
    in 100 classes that is 100 linkages of 10,000 (0.4 GB each, one at a time) plus a
    blockwise nearest-medoid pass.
    """
    labels = np.asarray(labels)
    if threshold is None and core_share is None:
        raise ValueError("give a threshold or a core_share")
    e = _unit(emb)
    n = len(labels)
    cluster_id = np.full(n, -1, dtype=np.int64)
    is_core = np.zeros(n, dtype=bool)
    cuts = np.full(int(labels.max()) + 1 if n and labels.max() >= 0 else 0, np.nan)
    rng = np.random.default_rng(seed)
    next_id = 0
    for c in np.unique(labels[labels >= 0]):
        rows = np.flatnonzero(labels == c)
        sample = np.sort(rng.choice(rows, max_per_class, replace=False)) if len(rows) > max_per_class else rows
        share = None if core_share is None else float(np.broadcast_to(core_share, cuts.shape)[c]
                                                        if np.ndim(core_share) else core_share)
        flat, cut = _complete_linkage(e[sample], threshold, method, share)
        cuts[c] = cut
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
                far = 1.0 - sim[np.arange(len(best)), best] > cut / 2
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
    return (cluster_id, is_core, cuts) if return_cuts else (cluster_id, is_core)


def cluster_table(cluster_id: np.ndarray, is_core: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """One row per cluster: ``id``, ``label``, ``size``, ``core`` (the arrays of clusters.npz)."""
    ids, first, size = np.unique(cluster_id[cluster_id >= 0], return_index=True, return_counts=True)
    rows = np.flatnonzero(cluster_id >= 0)[first]
    return {"id": ids, "label": np.asarray(labels)[rows], "size": size, "core": np.asarray(is_core)[rows]}


def knn(emb: np.ndarray, k: int, *, reference: np.ndarray | None = None, rows: np.ndarray | None = None,
        exact: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours (cosine) of ``rows`` (default all) among ``reference`` rows (default all), self excluded.

    Returns (indices (len(rows), k) into the rows of ``emb``, similarities), best first.
    Exact and blockwise (memory ``BLOCK x len(reference)``) unless the scan would be large
    (``exact=None``: more than ``EXACT_MAX_PRODUCTS`` query x reference pairs, about
    200,000 x 200,000) and faiss is installed: then an inverted-file index (faiss
    ``IndexIVFFlat``, inner product, ``nprobe`` lists of ``~sqrt(N)``), which takes 1,000,000 x
    512 in minutes on 2 cores where the exact scan takes hours (bench/suspects_cifar10n.py
    --scale measures both, and the recall).
    """
    e = _unit(emb)
    ref = np.arange(len(e)) if reference is None else np.asarray(reference)
    rows = np.arange(len(e)) if rows is None else np.asarray(rows)
    k = min(k, len(ref) - 1)
    if exact is None:
        exact = len(rows) * len(ref) <= EXACT_MAX_PRODUCTS or not _have_faiss()
    if not exact:
        return _knn_ivf(e, k, ref, rows)
    er = e[ref]
    idx = np.empty((len(rows), k), dtype=np.int64)
    sims = np.empty((len(rows), k), dtype=np.float32)
    pos_in_ref = np.full(len(e), -1)
    pos_in_ref[ref] = np.arange(len(ref))
    for s in range(0, len(rows), BLOCK):
        block = rows[s:s + BLOCK]
        sim = e[block] @ er.T
        self_pos = pos_in_ref[block]
        has = self_pos >= 0
        sim[np.flatnonzero(has), self_pos[has]] = -np.inf
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else \
            np.tile(np.arange(sim.shape[1]), (len(block), 1))
        ps = np.take_along_axis(sim, part, 1)
        order = np.argsort(-ps, axis=1)
        idx[s:s + len(block)] = ref[np.take_along_axis(part, order, 1)]
        sims[s:s + len(block)] = np.take_along_axis(ps, order, 1)
    return idx, sims


EXACT_MAX_PRODUCTS = 4 * 10**10


def _have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _knn_ivf(e: np.ndarray, k: int, ref: np.ndarray, rows: np.ndarray, *, nprobe: int = 16,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Approximate kNN with a faiss inverted-file index over ``e[ref]`` (self excluded, as :func:`knn`).

    ``nlist = 4 sqrt(len(ref))`` lists trained by k-means on a seeded sample of 32 per list;
    each query scans ``nprobe`` lists. One neighbour more is asked for, so that a query that
    finds itself can drop it.
    """
    import faiss

    d = e.shape[1]
    nlist = max(1, int(4 * np.sqrt(len(ref))))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    train = ref if len(ref) <= 32 * nlist else np.sort(rng.choice(ref, 32 * nlist, replace=False))
    index.cp.niter = 10
    index.cp.min_points_per_centroid = 1  # a sample of 32 per list is enough to place them
    index.train(np.ascontiguousarray(e[train]))
    for s in range(0, len(ref), 65536):
        index.add(np.ascontiguousarray(e[ref[s:s + 65536]]))
    index.nprobe = min(nprobe, nlist)
    idx = np.empty((len(rows), k), dtype=np.int64)
    sims = np.empty((len(rows), k), dtype=np.float32)
    pos_in_ref = np.full(len(e), -1)
    pos_in_ref[ref] = np.arange(len(ref))
    for s in range(0, len(rows), 65536):
        block = rows[s:s + 65536]
        dist, found = index.search(np.ascontiguousarray(e[block]), k + 1)
        self_pos = pos_in_ref[block]
        is_self = found == self_pos[:, None]
        # drop the query itself where found, else the last (k+1-th) neighbour
        drop = np.where(is_self.any(1), is_self.argmax(1), k)
        keep = np.ones_like(found, dtype=bool)
        keep[np.arange(len(block)), drop] = False
        found = found[keep].reshape(len(block), k)
        dist = dist[keep].reshape(len(block), k)
        missing = found < 0  # fewer than k in the probed lists
        idx[s:s + len(block)] = np.where(missing, ref[0], ref[np.maximum(found, 0)])
        sims[s:s + len(block)] = np.where(missing, -np.inf, dist)
    return idx, sims


def knn_label_distribution(emb: np.ndarray, labels: np.ndarray, k: int = 10,
                           num_classes: int | None = None, *, rows: np.ndarray | None = None) -> np.ndarray:
    """(N, C) share of each label among an image's ``k`` nearest labelled neighbours (self excluded).

    With ``rows`` only those rows are computed ((len(rows), C)); the neighbours are still
    all the labelled rows of ``emb``.
    """
    labels = np.asarray(labels)
    c = num_classes or int(labels.max()) + 1
    ref = np.flatnonzero(labels >= 0)
    idx, sims = knn(emb, k, reference=ref, rows=rows)
    n = len(idx)
    dist = np.zeros((n, c), dtype=np.float32)
    ok = np.isfinite(sims)
    np.add.at(dist, (np.repeat(np.arange(n), idx.shape[1])[ok.ravel()], labels[idx].ravel()[ok.ravel()]), 1.0)
    return dist / np.maximum(1, ok.sum(1, keepdims=True))


def knn_agreement(emb: np.ndarray, labels: np.ndarray, k: int = 10) -> np.ndarray:
    """(N,) share of an image's ``k`` nearest labelled neighbours that carry its own label (NaN if unlabelled)."""
    labels = np.asarray(labels)
    dist = knn_label_distribution(emb, labels, k)
    out = np.full(len(labels), np.nan, dtype=np.float32)
    lab = labels >= 0
    out[lab] = dist[np.flatnonzero(lab), labels[lab]]
    return out
