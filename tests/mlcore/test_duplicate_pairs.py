"""mlcore.duplicates.cosine_pairs: the all-pairs scan and the neighbour search for large sets
give the same pairs, a crowd of copies included."""
import numpy as np

from mlcore.duplicates import PAIR_K, cosine_pairs


def features_with_copies(seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((40, 48)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, 40, 6000)] + 0.9 * rng.standard_normal((6000, 48)).astype(np.float32) / np.sqrt(48)
    x[100:400:2] = x[101:401:2] + 0.02 * rng.standard_normal((150, 48)).astype(np.float32) / np.sqrt(48)
    x[1000:1000 + PAIR_K + 8] = x[999] + 0.01 * rng.standard_normal((PAIR_K + 8, 48)).astype(np.float32) / np.sqrt(48)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_neighbour_search_finds_the_pairs_of_the_full_scan_a_crowd_of_copies_included():
    feats = features_with_copies()
    valid = np.ones(len(feats), dtype=bool)
    valid[7::50] = False
    full = cosine_pairs(feats, 0.97, valid=valid, exact=True)
    fast = cosine_pairs(feats, 0.97, valid=valid, exact=False)
    crowd = PAIR_K + 9  # rows 999..1023 are all copies of each other: more partners than PAIR_K
    assert len(full[0]) >= 150 + crowd * (crowd - 1) // 2 - 30
    assert full[0].tolist() == fast[0].tolist() and full[1].tolist() == fast[1].tolist()
    assert np.allclose(full[2], fast[2], atol=1e-5)
    assert (fast[0] < fast[1]).all() and valid[fast[0]].all() and valid[fast[1]].all()
