"""Witnesses weighted by the data, cuts chosen from the data, the decision rules, held-out spaces, kNN at scale."""
import numpy as np
import pytest

from mlcore.cluster import cluster_per_class, knn
from mlcore.suspects import error_rates, fit_weights, score


def noisy_world(seed=0, n=1200, c=4, d=16, noise=0.15, spread=0.35):
    """``c`` classes around orthogonal centres; ``noise`` of the labels flipped at random;
    probabilities as a model fit to the noisy labels gives them: ``T q``, where ``q`` puts 0.85
    on the true class 75% of the time (else on a random one) and ``T`` is the label noise."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, c, n)
    emb = np.eye(d)[true] + spread * rng.standard_normal((n, d)) / np.sqrt(d) * 4
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    given = true.copy()
    flip = rng.random(n) < noise
    given[flip] = (true[flip] + rng.integers(1, c, flip.sum())) % c
    knows = rng.random(n) < 0.75
    guess = np.where(knows, true, rng.integers(0, c, n))
    q = np.full((n, c), 0.15 / (c - 1))
    q[np.arange(n), guess] = 0.85
    t = np.full((c, c), noise / (c - 1))
    np.fill_diagonal(t, 1 - noise)
    prob = q @ t.T
    return prob.astype(np.float32), given, emb.astype(np.float32), true


def auroc(score, positive):
    from scipy.stats import rankdata
    r = rankdata(score)
    npos, nneg = positive.sum(), (~positive).sum()
    return (r[positive].sum() - npos * (npos + 1) / 2) / (npos * nneg)


def test_a_witness_of_pure_noise_gets_almost_no_weight_and_does_not_hurt_the_ranking():
    prob, given, emb, true = noisy_world()
    rng = np.random.default_rng(5)
    junk = rng.dirichlet(np.ones(prob.shape[1]) * 0.3, len(given)).astype(np.float32)
    plain = score(prob, given, emb)
    with_junk = score(prob, given, emb, witnesses={"junk": junk})
    weights = dict(zip(with_junk["witness_names"].tolist(), with_junk["witness_weights"].tolist()))
    assert weights["junk"] < 0.03, weights
    assert weights["prob"] > 0.1 and weights["knn"] + weights["cluster"] > 0.5, weights  # the real ones count
    errors = given != true
    assert auroc(with_junk["score"], errors) >= auroc(plain["score"], errors) - 0.005
    # the old fixed mix had no way to tell: junk at a fixed share pulls the ranking down
    fixed = score(prob, given, emb, witnesses={"junk": junk}, method="fused", knn_weight=0.7)
    assert set(fixed["witness_names"].tolist()) == {"prob", "knn"}


def test_fit_weights_follows_how_well_each_witness_predicts_the_given_labels():
    prob, given, emb, true = noisy_world(seed=1)
    c = prob.shape[1]
    oracle = np.eye(c, dtype=np.float32)[true] * 0.9 + 0.1 / c  # knows the true class: best predictor
    w = fit_weights({"prob": prob, "oracle": oracle, "prior": np.full_like(prob, 1 / c)}, given)
    assert w["oracle"] > w["prob"] and abs(sum(w.values()) - 1) < 1e-9


def test_the_cluster_cut_is_chosen_per_class_from_its_own_dendrogram():
    """A fixed cosine cut means something only on one embedding's scale: tight classes and loose
    classes need different cuts. A core share finds each class's cut from its own data."""
    rng = np.random.default_rng(2)
    d = 32
    tight = np.eye(d)[0] + 0.05 * rng.standard_normal((200, d))
    loose = np.eye(d)[1] + 0.9 * rng.standard_normal((200, d))
    odd = np.eye(d)[[20, 21, 22, 23, 24]] + 0.05 * rng.standard_normal((5, d))
    emb = np.vstack([tight, odd, loose, odd + np.eye(d)[25]])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.array([0] * 205 + [1] * 205)
    _, core_fixed = cluster_per_class(emb, labels, threshold=0.5)
    assert (~core_fixed[205:]).mean() > 0.5  # the loose class: almost all "outliers" at 0.5
    cid, core, cuts = cluster_per_class(emb, labels, core_share=0.9, return_cuts=True)
    assert cuts[1] > cuts[0] + 0.3 and cuts.shape == (2,)
    for cls in (0, 1):
        assert core[labels == cls].mean() >= 0.8
    assert not core[200:205].any()  # the odd images of the tight class are among its outliers


def test_score_sets_the_core_share_from_the_estimated_error_rate_and_returns_the_cut():
    prob, given, emb, true = noisy_world(seed=3, noise=0.2)
    s = score(prob, given, emb)
    rates = error_rates(prob, given)
    assert ((rates > 0.05) & (rates < 0.5)).all()
    outlier_share = s["cluster_outlier"].mean()
    assert 0.05 < outlier_share < 0.4  # the fixed cut at 0.5 called nearly all or nothing outliers
    assert np.isfinite(s["cluster_cut"]).all() and len(np.unique(s["cluster_cut"])) == prob.shape[1]
    errors = given != true
    assert (errors[s["cluster_outlier"]]).mean() > 2 * errors.mean()  # the outliers are enriched in errors


@pytest.mark.parametrize("decision", ["cl", "cleanlab"])
def test_both_decision_rules_flag_the_errors_with_an_honest_expected_precision(decision):
    prob, given, emb, true = noisy_world(seed=4, noise=0.2)
    s = score(prob, given, emb, decision=decision)
    errors = given != true
    flagged = s["flagged"]
    precision = errors[flagged].mean()
    assert str(s["decision"]) == decision and flagged.sum() > 50
    assert precision > 0.6 and errors[flagged].sum() / errors.sum() > 0.4
    assert abs(float(s["expected_precision"]) - precision) < 0.2
    assert abs(float(s["expected_errors"]) - errors.sum()) < 0.35 * errors.sum()
    with pytest.raises(ValueError, match="decision"):
        score(prob, given, emb, decision="vote")


def test_neighbours_in_a_held_out_space_catch_what_memorised_embeddings_hide():
    """The main run's embeddings pulled mislabelled images onto their given class; a fold model
    that never saw them places them by their pixels."""
    prob, given, emb, true = noisy_world(seed=6, noise=0.15, spread=0.2)
    c, d = prob.shape[1], emb.shape[1]
    memorised = np.eye(d)[given] + 0.05 * np.random.default_rng(0).standard_normal((len(given), d))
    flat = np.full_like(prob, 1.0 / c)  # a model that knows nothing: only the neighbours speak
    errors = given != true
    half = np.arange(len(given)) % 2
    # fold f's space: its held-out rows by their pixels, the rows it trained on memorised
    spaces = [(np.flatnonzero(half == f), np.where((half == f)[:, None], emb, memorised).astype(np.float32))
              for f in (0, 1)]
    seen = score(flat, given, memorised.astype(np.float32), method="knn")
    held_out = score(flat, given, None, spaces=spaces, method="knn")
    assert auroc(held_out["score"], errors) > 0.9 > auroc(seen["score"], errors) + 0.3
    assert held_out["cluster_id"].min() >= 0 and len(np.unique(held_out["cluster_id"])) >= 2 * c


def test_knn_at_scale_uses_an_inverted_file_index_that_finds_the_exact_neighbours():
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((50, 32))
    emb = centres[rng.integers(0, 50, 20000)] + 0.3 * rng.standard_normal((20000, 32))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    approx, sims = knn(emb, 10, exact=False)
    rows = np.arange(0, 20000, 97)
    exact, _ = knn(emb, 10, rows=rows, exact=True)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx[rows], exact)])
    assert recall > 0.9 and (approx != np.arange(20000)[:, None]).all() and (np.diff(sims, axis=1) <= 1e-6).all()
