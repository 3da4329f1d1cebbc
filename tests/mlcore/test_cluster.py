import numpy as np

from mlcore.cluster import cluster_per_class, cluster_table, knn, knn_agreement
from tests.mlcore.helpers import clustered


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def blob(centre, n, spread, rng):
    c = np.asarray(centre, dtype=np.float32)
    return unit(c[None] + spread * rng.standard_normal((n, len(c))))


def test_tight_cluster_with_one_far_point_flags_that_point():
    rng = np.random.default_rng(0)
    a = np.eye(16)[0]
    emb = np.vstack([blob(a, 30, 0.05, rng), unit([np.eye(16)[5]])])
    labels = np.zeros(31, dtype=int)
    cid, core = cluster_per_class(emb, labels, threshold=0.3)
    assert core[:30].all() and not core[30]
    assert cid[30] != cid[0]


def test_clusters_per_class_have_unique_ids_and_unlabelled_rows_are_left_out():
    rng = np.random.default_rng(1)
    emb = np.vstack([blob(np.eye(8)[0], 10, 0.05, rng), blob(np.eye(8)[1], 10, 0.05, rng),
                     blob(np.eye(8)[2], 3, 0.05, rng)])
    labels = np.array([0] * 10 + [1] * 10 + [-1] * 3)
    cid, core = cluster_per_class(emb, labels, threshold=0.3)
    assert (cid[20:] == -1).all() and not core[20:].any()
    assert set(cid[:10]).isdisjoint(cid[10:20])
    table = cluster_table(cid, core, labels)
    assert sorted(table["size"][table["core"]].tolist()) == [10, 10]


def test_max_per_class_samples_then_assigns_the_rest_to_the_nearest_medoid():
    rng = np.random.default_rng(2)
    emb = np.vstack([blob(np.eye(16)[0], 300, 0.05, rng), blob(np.eye(16)[1], 100, 0.05, rng),
                     unit([np.eye(16)[7]])])
    labels = np.zeros(len(emb), dtype=int)
    full_cid, full_core = cluster_per_class(emb, labels, threshold=0.3)
    cid, core = cluster_per_class(emb, labels, threshold=0.3, max_per_class=80)
    assert core.sum() == 300 and full_core.sum() == 300 and not core[300:].any()
    assert len(set(cid[300:400])) == 1 and cid[400] not in cid[:400]


def test_knn_excludes_self_and_agreement_counts_neighbour_labels():
    rng = np.random.default_rng(3)
    emb = np.vstack([blob(np.eye(8)[0], 10, 0.05, rng), blob(np.eye(8)[1], 10, 0.05, rng)])
    labels = np.array([0] * 10 + [1] * 10)
    labels[3] = 1  # a class-0 image labelled 1
    idx, sims = knn(emb, 5)
    assert (idx != np.arange(20)[:, None]).all() and (np.diff(sims, axis=1) <= 1e-6).all()
    agree = knn_agreement(emb, labels, k=5)
    assert agree[3] <= 0.2 and agree[0] >= 0.6 and agree[15] == 1.0


def test_inverted_file_knn_reaches_the_recall_it_is_tuned_to_and_never_returns_self():
    emb = clustered(12_000, 32, 60, 0.8, 4)
    rows, ref = np.arange(0, 12_000, 3), np.arange(1, 12_000)  # queries partly outside the reference
    got, sims = knn(emb, 10, reference=ref, rows=rows, exact=False)
    want, want_sims = knn(emb, 10, reference=ref, rows=rows, exact=True)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want)])
    assert recall >= 0.95
    assert (got != rows[:, None]).all() and np.isin(got, ref).all()
    assert (np.diff(sims, axis=1) <= 1e-6).all()
    # what it returns are true similarities, never better than the exact k-th best
    assert np.allclose(sims, np.einsum("qd,qkd->qk", emb[rows], emb[got]), atol=1e-5)
    assert (sims[:, -1] <= want_sims[:, -1] + 1e-5).all()
