import numpy as np

from mlcore import storage
from mlcore.__main__ import main
from mlcore.storage import load_npz, npz_bytes
from mlcore.suspects import REASON_CLUSTER, REASON_KNN, REASON_MODEL, confident_issue, score, score_run


def make_case(seed=0, n=60, c=3):
    """Three classes of confident, correct images; row 0 is a class-1 image labelled 0."""
    rng = np.random.default_rng(seed)
    true = np.arange(n) % c
    prob = np.full((n, c), 0.05)
    prob[np.arange(n), true] = 0.9
    prob += rng.uniform(0, 0.05, prob.shape)
    prob /= prob.sum(1, keepdims=True)
    centres = np.eye(8)[:c]
    emb = centres[true] + 0.05 * rng.standard_normal((n, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    given = true.copy()
    given[0] = 0 if true[0] != 0 else 1
    return prob, given, emb.astype(np.float32), true


def test_an_image_whose_probabilities_contradict_its_label_is_ranked_first_and_relabelled():
    prob, given, emb, true = make_case()
    for method in ("fused", "prob", "knn"):
        s = score(prob, given, emb, method=method, cluster_threshold=0.3)
        assert np.argmax(s["score"]) == 0, method
        assert s["flagged"][0] and s["flagged"].sum() == 1, method
        assert s["suggested"][0] == true[0]
    s = score(prob, given, emb, cluster_threshold=0.3)
    assert s["reasons"][0] == REASON_MODEL | REASON_CLUSTER | REASON_KNN
    assert s["cl_issue"][0] and s["margin"][0] < 0 and s["self_confidence"][0] < 0.1
    assert (s["score"] >= 0).all() and (s["score"] <= 1).all()


def test_unlabelled_images_are_scored_zero_and_never_flagged():
    prob, given, emb, _ = make_case()
    given[5] = -1
    s = score(prob, given, emb)
    assert s["score"][5] == 0 and not s["flagged"][5] and s["cluster_id"][5] == -1
    assert np.isnan(s["self_confidence"][5]) and s["suggested"][5] == prob[5].argmax()


def test_without_embeddings_only_the_model_speaks():
    prob, given, _, _ = make_case()
    s = score(prob, given, None)
    assert np.argmax(s["score"]) == 0 and (s["cluster_id"] == -1).all() and s["reasons"][0] == REASON_MODEL


def test_confident_issue_needs_another_class_over_its_threshold():
    prob = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.45, 0.55]])
    given = np.array([0, 0, 1, 0])
    # thresholds: class 0 -> mean(0.9, 0.8, 0.45) = 0.717, class 1 -> 0.8: 0.55 < 0.8, no issue
    assert not confident_issue(prob, given).any()
    given = np.array([0, 0, 1, 1])
    prob[3] = [0.95, 0.05]
    assert confident_issue(prob, given).tolist() == [False, False, False, True]


def test_score_run_writes_suspects_and_clusters(tmp_path):
    prob, given, emb, _ = make_case()
    run = storage.to_uri(str(tmp_path / "run"))
    uris = np.array([f"file:///img/{i}.png" for i in range(len(given))])
    split = np.array(["train"] * 50 + ["test"] * 10)
    storage.write_bytes(storage.join(run, "embeddings.npz"), npz_bytes({"uri": uris[::-1], "emb": emb[::-1]}))
    storage.write_bytes(storage.join(run, "oos.npz"), npz_bytes(
        {"uri": uris, "split": split, "label": given, "prob": prob.astype(np.float32),
         "labels": np.array(["a", "b", "c"])}))
    summary = score_run(run, str(tmp_path / "out"), oos_uri=storage.join(run, "oos.npz"), cluster_threshold=0.3)
    assert main(["suspects", "--run", run, "--oos", run, "--out", str(tmp_path / "cli"), "--cluster-threshold", "0.3",
                 "-q"]) == 0
    assert (tmp_path / "cli" / "suspects.npz").exists() and (tmp_path / "cli" / "suspects.json").exists()
    assert summary["flagged"] == 1 and summary["top"][0]["uri"] == uris[0]
    s = load_npz((tmp_path / "out" / "suspects.npz").read_bytes())
    assert s["uri"].tolist() == uris.tolist() and s["flagged"][0]
    c = load_npz((tmp_path / "out" / "clusters.npz").read_bytes())
    assert c["size"].sum() == len(given) and c["core"].sum() == 3


def test_new_subcommands_have_help(capsys):
    import pytest
    for cmd in ("suspects", "clean"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0 and f"usage: python -m mlcore {cmd}" in capsys.readouterr().out
