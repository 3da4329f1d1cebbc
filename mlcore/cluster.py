"""Embedding neighbourhoods: complete-linkage clusters per class, kNN label agreement.

(Near duplicates are not found here: a trained model's embedding collapses per class, so
mlcore.duplicates uses perceptual hashes and pretrained features instead.)

All functions take L2-normalised embeddings (``embeddings.npz``'s ``emb``, any float
dtype) and work in cosine distance ``1 - a.b``. Memory is bounded: the per-class linkage
holds one condensed distance matrix of at most ``max_per_class`` images, and the kNN
scans take matrix products in row blocks, never an N x N matrix.
"""
from __future__ import annotations

import logging

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

logger = logging.getLogger(__name__)

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


EXACT_MAX_PRODUCTS = 4 * 10**9  # query x reference pairs up to which knn() scans exactly
RECALL = 0.95                   # the least recall@k the inverted-file search is tuned to
RECALL_SAMPLE = 256             # queries on which that recall is measured against the exact scan
PROBES = (2, 4, 8, 16, 32, 64)  # the numbers of probed lists tried, in order
GEMM_CELLS = 1 << 24            # query x member scores per product in the list scans (64 MB)


def knn(emb: np.ndarray, k: int, *, reference: np.ndarray | None = None, rows: np.ndarray | None = None,
        exact: bool | None = None, recall: float = RECALL, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours (cosine) of ``rows`` (default all) among ``reference`` rows (default all), self excluded.

    Returns (indices (len(rows), k) into the rows of ``emb``, similarities), best first.
    Exact and blockwise (memory ``BLOCK x len(reference)``) unless the scan would be large
    (``exact=None``: more than ``EXACT_MAX_PRODUCTS`` query x reference pairs, about
    63,000 x 63,000): then an inverted-file search (:func:`_knn_ivf`) whose number of probed
    lists is the least that reaches ``recall`` (recall@k against the exact scan, measured on
    a seeded sample of the queries). 1,000,000 x 512 takes minutes on 2 cores where the
    exact scan takes hours (bench/suspects_cifar10n.py --scale measures both, and the recall).
    """
    e = _unit(emb)
    ref = np.arange(len(e)) if reference is None else np.asarray(reference)
    rows = np.arange(len(e)) if rows is None else np.asarray(rows)
    k = min(k, len(ref) - 1)
    if exact is None:
        exact = len(rows) * len(ref) <= EXACT_MAX_PRODUCTS
    if exact or k < 1:
        return _knn_exact(e, max(k, 0), ref, rows)
    return _knn_ivf(e, k, ref, rows, recall=recall, seed=seed)


def _knn_exact(e: np.ndarray, k: int, ref: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    er = e if len(ref) == len(e) and np.array_equal(ref, np.arange(len(e))) else e[ref]  # no copy of all
    idx = np.empty((len(rows), k), dtype=np.int64)
    sims = np.empty((len(rows), k), dtype=np.float32)
    if k == 0:
        return idx, sims
    pos_in_ref = np.full(len(e), -1)
    pos_in_ref[ref] = np.arange(len(ref))
    step = max(1, min(BLOCK, 4 * GEMM_CELLS // max(1, len(ref))))  # at most 256 MB of scores
    for s in range(0, len(rows), step):
        block = rows[s:s + step]
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


def coarse_lists(e: np.ndarray, nlist: int, *, seed: int = 0, per_list: int = 32) -> np.ndarray:
    """``nlist`` centroids (float32, unit rows) of spherical k-means (faiss, 10 rounds) on a seeded
    sample of ``per_list`` rows per list of ``e`` (unit rows, any float dtype)."""
    import faiss

    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(e), min(len(e), per_list * nlist), replace=False))
    km = faiss.Kmeans(e.shape[1], nlist, niter=10, spherical=True, seed=seed, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=per_list)
    km.train(np.ascontiguousarray(e[take], dtype=np.float32))
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def nearest_lists(e: np.ndarray, centroids: np.ndarray, n: int, rows: np.ndarray | None = None) -> np.ndarray:
    """(len(rows), n) the ``n`` centroids (lists) most similar to each of ``rows`` of ``e``, nearest first."""
    import faiss

    rows = np.arange(len(e)) if rows is None else np.asarray(rows)
    n = min(n, len(centroids))
    out = np.empty((len(rows), n), dtype=np.int64)
    for s in range(0, len(rows), 65536):
        x = np.ascontiguousarray(e[rows[s:s + 65536]], dtype=np.float32)
        out[s:s + len(x)] = faiss.knn(x, centroids, n, metric=faiss.METRIC_INNER_PRODUCT)[1]
    return out


def _scan_lists(e: np.ndarray, k: int, ref: np.ndarray, rows: np.ndarray, members: np.ndarray,
                offsets: np.ndarray, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of each of ``rows`` among the members (positions in ``ref``) of its ``probes`` lists.

    List by list, not query by query: the queries that probe a list are scored against its
    members in one matrix product (faiss.knn: BLAS and a top-k heap), then merged into each
    query's running best ``k``. The query itself is never its own neighbour.
    """
    import faiss

    nq, nlist = len(rows), len(offsets) - 1
    best_s = np.full((nq, k), -np.inf, dtype=np.float32)
    best_i = np.full((nq, k), -1, dtype=np.int64)
    pos_in_ref = np.full(len(e), -1)
    pos_in_ref[ref] = np.arange(len(ref))
    self_pos = pos_in_ref[rows]
    flat_l = probes.ravel()
    by_list = np.argsort(flat_l, kind="stable")
    flat_q = (by_list // probes.shape[1]).astype(np.int64)
    bounds = np.searchsorted(flat_l[by_list], np.arange(nlist + 1))
    for lst in range(nlist):
        q_all, m = flat_q[bounds[lst]:bounds[lst + 1]], members[offsets[lst]:offsets[lst + 1]]
        if not len(q_all) or not len(m):
            continue
        xb = np.ascontiguousarray(e[ref[m]], dtype=np.float32)
        step = max(1, GEMM_CELLS // len(m))
        for s in range(0, len(q_all), step):
            q = q_all[s:s + step]
            sim, at = faiss.knn(np.ascontiguousarray(e[rows[q]], dtype=np.float32), xb, min(k + 1, len(m)),
                                metric=faiss.METRIC_INNER_PRODUCT)
            cand = m[at]
            sim[cand == self_pos[q, None]] = -np.inf
            all_s = np.hstack([best_s[q], sim])
            all_i = np.hstack([best_i[q], cand])
            top = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
            best_s[q] = np.take_along_axis(all_s, top, 1)
            best_i[q] = np.take_along_axis(all_i, top, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1), np.take_along_axis(best_s, order, 1)


def _knn_ivf(e: np.ndarray, k: int, ref: np.ndarray, rows: np.ndarray, *, recall: float = RECALL,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Approximate kNN by an inverted file over ``e[ref]`` (self excluded, as :func:`knn`).

    ``sqrt(len(ref))`` lists (spherical k-means centroids, :func:`coarse_lists`); each reference
    row sits in the list of its nearest centroid, each query scans the members of its ``nprobe``
    nearest lists (:func:`_scan_lists`). ``nprobe`` is the first of ``PROBES`` whose recall@k
    against the exact scan, on ``RECALL_SAMPLE`` seeded queries, reaches ``recall``.
    """
    nlist = max(1, min(len(ref) // 8, int(np.sqrt(len(ref)))))  # balances assigning and scanning
    centroids = coarse_lists(e[ref], nlist, seed=seed)
    wide = max(p for p in PROBES if p <= 16)
    near_ref = nearest_lists(e, centroids, wide, ref)
    members = np.argsort(near_ref[:, 0], kind="stable")
    offsets = np.searchsorted(near_ref[members, 0], np.arange(nlist + 1))
    same = len(rows) == len(ref) and np.array_equal(rows, ref)
    near = near_ref if same else nearest_lists(e, centroids, wide, rows)
    del near_ref
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(rows), min(len(rows), RECALL_SAMPLE), replace=False))
    truth, _ = _knn_exact(e, k, ref, rows[sample])
    nprobe, got = PROBES[-1], 0.0
    for p in PROBES:
        probes = near[sample, :p] if p <= near.shape[1] else nearest_lists(e, centroids, p, rows[sample])
        found = ref[np.maximum(_scan_lists(e, k, ref, rows[sample], members, offsets, probes)[0], 0)]
        got = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)]))
        if got >= recall or p >= nlist:
            nprobe = p
            break
    probes = near[:, :nprobe] if nprobe <= near.shape[1] else nearest_lists(e, centroids, nprobe, rows)
    del near
    logger.info("knn: %s queries over %s, %s lists, %s probed: recall@%s %.3f on %s sampled queries",
                len(rows), len(ref), nlist, nprobe, k, got, len(sample))
    best_i, best_s = _scan_lists(e, k, ref, rows, members, offsets, probes)
    missing = best_i < 0  # fewer than k members in the probed lists
    return np.where(missing, ref[0], ref[np.maximum(best_i, 0)]), np.where(missing, -np.inf, best_s)


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
