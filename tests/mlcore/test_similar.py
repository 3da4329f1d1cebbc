import numpy as np
import pytest

from mlcore.similar import SimilarIndex
from tests.mlcore.helpers import clustered


def test_returns_the_exact_top_k_of_a_brute_force_search(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((5000, 32)).astype(np.float32)
    ids = np.arange(5000) * 10
    index = SimilarIndex(emb, ids)
    unit = index.emb.astype(np.float32)  # the stored (float16) vectors
    for q in rng.standard_normal((5, 32)).astype(np.float32):
        got, sims = index.query(q, 7)
        truth = np.argsort(-(unit @ (q / np.linalg.norm(q))))[:7]
        assert got.tolist() == (truth * 10).tolist()
        assert np.all(np.diff(sims) <= 0)


def test_query_by_id_leaves_the_item_out_and_survives_save_load(tmp_path):
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((200, 16)).astype(np.float32)
    emb[17] = emb[3] + 0.01
    index = SimilarIndex(emb, np.array([f"img{i}" for i in range(200)]))
    ids, sims = index.query("img3", 3)
    assert ids[0] == "img17" and "img3" not in ids and sims[0] > 0.99
    loaded = SimilarIndex.load(index.save(str(tmp_path / "index.npz")))
    assert loaded.query("img3", 3)[0].tolist() == ids.tolist()
    with pytest.raises(KeyError):
        loaded.query("nope", 3)


def test_a_loaded_index_maps_its_vectors_from_the_file_instead_of_reading_them(tmp_path):
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((3000, 24)).astype(np.float32)
    ids = rng.permutation(3000) * 7 + 5  # unsorted ids: looked up by binary search
    index = SimilarIndex(emb, ids)
    uri = index.save(str(tmp_path / "similar.npz"))
    loaded = SimilarIndex.load(uri)
    from mlcore.similar import mapped_npz
    assert isinstance(mapped_npz(tmp_path / "similar.npz")["emb"], np.memmap)
    for i in (0, 17, 2999):
        got, sims = loaded.query(int(ids[i]), 5)
        want, want_sims = index.query(int(ids[i]), 5)
        assert got.tolist() == want.tolist() and np.allclose(sims, want_sims) and ids[i] not in got
    q = rng.standard_normal(24).astype(np.float32)
    assert loaded.query(q, 9)[0].tolist() == index.query(q, 9)[0].tolist()
    with pytest.raises(KeyError):
        loaded.query(4, 3)  # 4 is no id: all are 5 mod 7


def test_an_inverted_file_index_probes_few_lists_and_reaches_the_recall_it_measured(tmp_path):
    emb = clustered(8000, 32, 80, 1.0, 5)
    ids = np.arange(8000) * 3 + 1
    index = SimilarIndex(emb, ids, nlist=60)
    assert 1 <= index.nprobe < 60 and index.recall >= 0.95
    exact = [index.query(int(i), 12, nprobe=60)[0] for i in ids[::97]]  # all lists probed: exact
    fast = [index.query(int(i), 12)[0] for i in ids[::97]]
    assert np.mean([len(set(a) & set(b)) / 12 for a, b in zip(exact, fast)]) >= 0.9
    assert all(int(i) not in f for i, f in zip(ids[::97], fast))
    # what it reads is a few lists, not the index
    block, rows = index._candidates(index.emb[0].astype(np.float32), None)
    assert len(block) < 8000 * index.nprobe / 60 * 3 and len(rows) == len(block)

    loaded = SimilarIndex.load(index.save(str(tmp_path / "ivf.npz")))
    assert (loaded.nprobe, loaded.recall) == (index.nprobe, index.recall)
    for i in ids[::501]:
        got, sims = loaded.query(int(i), 12)
        want, want_sims = index.query(int(i), 12)
        assert got.tolist() == want.tolist() and np.allclose(sims, want_sims)
    q = np.random.default_rng(6).standard_normal(32).astype(np.float32)
    assert loaded.query(q, 5)[0].tolist() == index.query(q, 5)[0].tolist()
    with pytest.raises(KeyError):
        loaded.query(2, 3)


def test_an_index_file_of_the_older_layout_still_loads_and_answers_exactly(tmp_path):
    rng = np.random.default_rng(7)
    emb = rng.standard_normal((500, 16)).astype(np.float32)
    unit = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float16)
    np.savez(tmp_path / "old.npz", emb=unit, ids=np.arange(500)[::-1])  # what earlier runs wrote
    loaded = SimilarIndex.load(str(tmp_path / "old.npz"))
    assert loaded.centroids is None
    got, _ = loaded.query(499, 4)  # row 0
    truth = np.argsort(-(unit.astype(np.float32)[1:] @ unit[0].astype(np.float32)))[:4] + 1
    assert got.tolist() == (499 - truth).tolist()
