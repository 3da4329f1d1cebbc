"""Mislabel scoring: which images' given labels are probably wrong, and what they should be.

Independent witnesses against a given label:

- the **model**, through *out-of-sample* probabilities (:mod:`mlcore.folds`: each train
  image predicted by a model that never saw it, so it cannot have memorised the wrong label);
- the **embedding neighbourhood**: the labels of an image's nearest neighbours (kNN) and
  whether it sits inside its class's core cluster (:mod:`mlcore.cluster`).

``method="fused"`` (the default) mixes the witnesses' label distributions -- the model's
probabilities, the kNN label shares, the similarity to each class's core cluster (a
softmax, its temperature fit to the labels) and a uniform prior -- with the weights that
best predict the given labels (:func:`fit_weights`, maximum likelihood by EM), and scores
``1 - f[given]``. No constant tuned on one bench decides how far to trust a witness: on
the project's own images a witness that predicts the labels no better than the prior gets
a weight near 0 (tests/mlcore/test_suspects_witnesses.py). The old fixed mix
(``knn_weight=0.7``, tuned on 4,000 Fashion-MNIST images with synthetic noise) lost to
cleanlab on real human noise (CIFAR-10N); ``knn_weight=`` still gives it, for comparison.

Clusters: each class is cut where its core holds ``1 -`` the class's estimated rate of
label errors (confident joint), not at one cosine distance for every embedding
(:func:`mlcore.cluster.cut_for_core_share`); the cut is returned per image
(``cluster_cut``).

The decision rule (``flagged``): ``"cleanlab"`` (the default) is cleanlab's
``find_label_issues`` on the fused matrix ``f``; ``"cl"`` is this module's confident-learning
rule on ``f`` (class ``c``'s threshold is the mean ``f[:, c]`` over images labelled ``c``;
flagged when another class reaches its own threshold and beats the given label). Both come
with ``expected_precision``, the mean of :func:`error_posterior` over the flagged set.

How the defaults were chosen: bench/suspects_cifar10n.py, on one half (A) of the CIFAR-10N
dev set with the random2 and random3 human labels (never on what it reports): witness
embeddings that never saw the labels (the pretrained backbone's) beat those of a model
trained on the given labels, k = 10 neighbours tied with 25, and cleanlab's rule had the
higher F1 (recall higher at the same precision) than the own rule on ``f``. The figures on
the other half (aggre, random1, worst) against cleanlab on the same probabilities:
bench/results/suspects_cifar10n.json.

``reasons`` bit flags (``REASON_*``): 1 the model disagrees (its out-of-sample top class
is not the given label), 2 cluster outlier (outside its class's core cluster), 4 kNN
disagreement (fewer than half of the nearest labelled neighbours share the label).
"""
from __future__ import annotations

import numpy as np

from .cluster import cluster_per_class, knn_label_distribution
from .noise import (best_softmax, calibrate, confident_issue, error_posterior, error_rates, find_label_issues,
                    fit_weights, normalised_margin)

REASON_MODEL = 1
REASON_CLUSTER = 2
REASON_KNN = 4
METHODS = ("fused", "prob", "knn", "cluster")
DECISIONS = ("cl", "cleanlab")
DEFAULT_DECISION = "cleanlab"  # chosen on CIFAR-10N half A (bench/suspects_cifar10n.py)


CORE_SHARE_RANGE = (0.5, 0.99)  # a core never holds less than half of its class, nor all of it


def core_shares(witnesses: dict[str, np.ndarray], given: np.ndarray) -> np.ndarray:
    """(C,) the share of each class that its core cluster should hold: 1 - the class's
    estimated rate of label errors, from the confident joint of ``witnesses`` (name -> (N, C))
    mixed as they best predict the ``given`` labels (:func:`fit_weights`), within
    :data:`CORE_SHARE_RANGE`. The cut of each class's dendrogram follows from it
    (:func:`mlcore.cluster.cut_for_core_share`): classes with noisier labels get tighter cores."""
    w = fit_weights(witnesses, given)
    f = sum(w[k] * witnesses[k] for k in w)
    return np.clip(1.0 - error_rates(f, given), *CORE_SHARE_RANGE)


def _core_similarity(e: np.ndarray, given: np.ndarray, is_core: np.ndarray, c: int) -> np.ndarray:
    """(N, C) cosine similarity of each image to each class's core centroid (itself left out of its own)."""
    sums = np.zeros((c, e.shape[1]), dtype=np.float64)
    core = np.flatnonzero(is_core & (given >= 0))
    np.add.at(sums, given[core], e[core])
    sim = (e @ sums.T).astype(np.float64)  # e . S_c
    norms = np.linalg.norm(sums, axis=1)
    out = np.divide(sim, norms[None, :], out=np.zeros_like(sim), where=norms[None, :] > 0)
    # a core member's own class centroid without itself: e.(S - e) / |S - e|
    g = given[core]
    own = sim[core, g] - 1.0
    loo = np.sqrt(np.maximum(norms[g] ** 2 - 2 * sim[core, g] + 1.0, 0.0))
    out[core, g] = np.divide(own, loo, out=np.zeros_like(own), where=loo > 1e-9)
    return out


def _softmax_fit(sim: np.ndarray, given: np.ndarray) -> np.ndarray:
    """softmax(sim / tau) with the temperature that best predicts the given labels (a grid; 1 parameter)."""
    taus = (0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3, 0.5, 1.0)
    return best_softmax((sim / tau for tau in taus), given).astype(np.float32)


def _spaces(emb, spaces, given):
    """``[(rows, emb, labels of the rows that can be neighbours there)]``."""
    if spaces is None:
        return [(np.arange(len(given)), emb, given)]
    out = []
    for sp in spaces:
        ref_given = given
        if len(sp) > 2 and sp[2] is not None:
            ref_given = np.full_like(given, -1)
            ref_given[sp[2]] = given[sp[2]]
        out.append((np.asarray(sp[0], dtype=np.int64), sp[1], ref_given))
    return out


def score(prob: np.ndarray, given: np.ndarray, emb: np.ndarray | None = None, *, method: str = "fused",
          cluster_threshold: float | None = None, core_share: float | None = None, knn: int = 10,
          knn_weight: float | None = None, decision: str = DEFAULT_DECISION, spaces=None,
          witnesses: dict[str, np.ndarray] | None = None, max_per_class: int = 10_000) -> dict[str, np.ndarray]:
    """Per-image mislabel evidence for ``prob`` (N, C) out-of-sample probabilities and ``given`` (N,) labels.

    ``given`` is -1 where an image has no label (it is scored 0 and never flagged, but it is
    clustered nowhere and serves as nobody's neighbour). ``emb`` (N, D) L2-normalised
    embeddings in the same row order; without it (and without ``spaces``) only the model
    speaks (the cluster and kNN arrays are then -1 / True / NaN and ``method`` falls back to
    ``"prob"``). ``spaces``: embeddings that never saw the labels of the images they place,
    as ``[(rows, emb_s)]`` or ``[(rows, emb_s, reference)]``: the rows' neighbours are taken
    among the labelled rows of ``emb_s`` (N, D) (those in ``reference`` only, if given) and
    the rows are clustered there (e.g. fold f's model embedding every
    image, for the rows it held out: :func:`mlcore.folds.held_out_spaces`).

    Witnesses, each an (N, C) distribution over the labels: ``prob``; ``knn`` (label shares
    of the ``knn`` nearest neighbours); ``cluster`` (softmax of the similarity to each
    class's core centroid); ``prior`` (uniform); plus ``witnesses`` (name -> (N, C)). With
    ``knn_weight=None`` (the default) they are mixed with the weights that best predict the
    given labels (:func:`fit_weights`); a float gives the old fixed mix of prob and knn.
    ``method`` ``"prob"``, ``"knn"`` or ``"cluster"`` uses that witness alone.

    Clusters: per class, cut at ``cluster_threshold`` (cosine distance) if given, else where
    the core holds ``core_share`` of the class (default: 1 - the class's estimated rate of
    label errors, from the confident joint of the prob and knn witnesses).

    Returns arrays of length N: ``self_confidence`` (p[given]), ``margin``, ``cl_issue``
    (confident-learning flag on ``prob`` alone), ``cluster_id``, ``is_core``,
    ``cluster_outlier``, ``cluster_cut`` (the cut of the image's class), ``knn_agreement``,
    ``score`` (1 - f[given], in [0, 1], higher = more likely mislabelled), ``error_posterior``
    (:func:`error_posterior` of f), ``flagged`` (``decision``: ``"cl"`` confident learning's
    rule on f, ``"cleanlab"`` cleanlab's ``find_label_issues`` on f), ``suggested`` (the most
    likely *other* label; for unlabelled images the most likely label), ``reasons``; and
    0-d / per-witness arrays: ``witness_names``, ``witness_weights``, ``expected_precision``
    (of the flagged set: mean error posterior), ``expected_errors`` (sum of the posterior
    over all labelled images), ``decision``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")
    prob = np.asarray(prob, dtype=np.float32)
    given = np.asarray(given, dtype=np.int64)
    n, c = prob.shape
    rows = np.arange(n)
    lab = given >= 0
    g = np.maximum(given, 0)

    self_conf = np.where(lab, prob[rows, g], np.nan).astype(np.float32)
    out = {"self_confidence": self_conf, "margin": normalised_margin(prob, given),
           "cl_issue": confident_issue(prob, given)}
    found = {"prob": prob, "prior": np.full((n, c), 1.0 / c, dtype=np.float32)}

    cluster_id, is_core = np.full(n, -1, dtype=np.int64), np.ones(n, dtype=bool)
    cut = np.full(n, np.nan)
    agreement = np.full(n, np.nan, dtype=np.float32)
    if (emb is not None or spaces is not None) and lab.sum() > 1:
        spaces = _spaces(emb, spaces, given)
        knn_dist = np.zeros((n, c), dtype=np.float32)
        for r, e, ref_given in spaces:
            knn_dist[r] = knn_label_distribution(e, ref_given, knn, c, rows=r)
        found["knn"] = knn_dist
        agreement = np.where(lab, knn_dist[rows, g], np.nan).astype(np.float32)
        if cluster_threshold is None and core_share is None:
            core_share = core_shares({k: found[k] for k in ("prob", "knn", "prior")}, given)
        core_sim = np.zeros((n, c))
        next_id = 0
        for r, e, _ in spaces:
            e = np.asarray(e, dtype=np.float32)
            cid, core, cuts = cluster_per_class(e[r], given[r], threshold=cluster_threshold, core_share=core_share,
                                                max_per_class=max_per_class, return_cuts=True)
            cluster_id[r] = np.where(cid >= 0, cid + next_id, -1)
            next_id = int(cluster_id.max()) + 1
            is_core[r] = core
            cut[r] = np.where(given[r] >= 0, np.pad(cuts, (0, c - len(cuts)), constant_values=np.nan)[g[r]], np.nan)
            core_sim[r] = _core_similarity(e[r], given[r], core, c)
        is_core &= lab
        found["cluster"] = _softmax_fit(core_sim, given)
    elif method != "prob":
        method = "prob"
    for name, w in (witnesses or {}).items():
        found[name] = np.asarray(w, dtype=np.float32)
    out.update(cluster_id=cluster_id, is_core=is_core, cluster_outlier=lab & ~is_core, cluster_cut=cut,
               knn_agreement=agreement)

    if method != "fused":
        weights = {method: 1.0}
    elif knn_weight is not None and "knn" in found:
        weights = {"prob": 1 - knn_weight, "knn": knn_weight}
    else:
        weights = fit_weights({k: v for k, v in found.items()}, given)
    f = sum(w * found[k] for k, w in weights.items()).astype(np.float32)
    f_given = f[rows, g]
    out["score"] = np.where(lab, np.clip(1.0 - f_given, 0.0, 1.0), 0.0).astype(np.float32)
    out["error_posterior"] = error_posterior(calibrate(f, given), given).astype(np.float32)
    out["flagged"] = confident_issue(f, given) if decision == "cl" else find_label_issues(f, given)
    alt = f.copy()
    alt[np.flatnonzero(lab), given[lab]] = -np.inf
    out["suggested"] = np.where(lab, alt.argmax(1), f.argmax(1)).astype(np.int64)
    reasons = np.zeros(n, dtype=np.int64)
    reasons |= np.where(lab & (prob.argmax(1) != given), REASON_MODEL, 0)
    reasons |= np.where(out["cluster_outlier"], REASON_CLUSTER, 0)
    reasons |= np.where(lab & (agreement < 0.5), REASON_KNN, 0)
    out["reasons"] = reasons
    post = out["error_posterior"]
    flagged = out["flagged"]
    out["witness_names"] = np.asarray(list(weights), dtype=str)
    out["witness_weights"] = np.asarray(list(weights.values()), dtype=np.float64)
    out["expected_precision"] = np.float64(post[flagged].mean() if flagged.any() else np.nan)
    out["expected_errors"] = np.float64(np.nansum(post))
    out["decision"] = np.asarray(decision)
    return out


def reason_names(bits: int) -> list[str]:
    """``["model", "cluster", "knn"]`` subset named by a ``reasons`` value."""
    return [name for flag, name in ((REASON_MODEL, "model"), (REASON_CLUSTER, "cluster"), (REASON_KNN, "knn"))
            if bits & flag]


def score_run(run_uri: str, out_uri: str, *, oos_uri: str | None = None, folds: int = 0,
              fold_epochs: int | None = None, progress=None, **kw) -> dict:
    """Score a finished run's images; writes ``suspects.npz``, ``clusters.npz`` and ``suspects.json`` to ``out_uri``.

    Probabilities: ``oos_uri`` (an ``oos.npz``), else with ``folds`` >= 2 the K fold runs are
    trained now (:func:`mlcore.folds.out_of_sample`, reusing the finished main run), else the
    run's own predictions (in-sample: memorised labels hide errors; ``suspects.json`` says so).
    Embeddings: the run's ``embeddings.npz``. ``kw`` goes to :func:`score`.

    ``suspects.npz``: ``uri``, ``split``, ``label`` (given), ``labels`` (names) and every array of
    :func:`score`. ``clusters.npz``: ``id``, ``label``, ``size``, ``core`` (one row per cluster).
    Returns the summary written to ``suspects.json``.
    """
    import json
    from dataclasses import fields

    from . import storage
    from .cluster import cluster_table
    from .storage import load_npz, npz_bytes

    source = "in-sample predictions of the run"
    if oos_uri is None and folds >= 2:
        from .folds import out_of_sample
        from .train import TrainConfig

        run = json.loads(storage.read_bytes(storage.join(run_uri, "run.json")))
        names = {f.name for f in fields(TrainConfig)}
        base = TrainConfig(**{k: v for k, v in run["config"].items() if k in names})
        base.output_uri = run_uri
        oos_uri = out_of_sample(base, k=folds, fold_epochs=fold_epochs, progress=progress)
    if oos_uri is not None:
        p = load_npz(storage.read_bytes(oos_uri if oos_uri.endswith(".npz") else storage.join(oos_uri, "oos.npz")))
        source = f"out-of-sample: {oos_uri}"
    else:
        p = load_npz(storage.read_bytes(storage.join(run_uri, "predictions.npz")))
    emb_file = load_npz(storage.read_bytes(storage.join(run_uri, "embeddings.npz")))
    row = {u: i for i, u in enumerate(emb_file["uri"].tolist())}
    have = np.asarray([u in row for u in p["uri"].tolist()])
    p = {k: (v[have] if v.ndim and len(v) == len(have) and k != "labels" else v) for k, v in p.items()}
    emb = emb_file["emb"][[row[u] for u in p["uri"].tolist()]].astype(np.float32)
    s = score(p["prob"], p["label"], emb, **kw)
    arrays = {"uri": p["uri"], "split": p["split"], "label": p["label"], "labels": p["labels"], **s}
    storage.write_bytes(storage.join(out_uri, "suspects.npz"), npz_bytes(arrays))
    storage.write_bytes(storage.join(out_uri, "clusters.npz"),
                        npz_bytes(cluster_table(s["cluster_id"], s["is_core"], p["label"])))
    names = p["labels"].tolist()
    flagged = s["flagged"]
    summary = {"run": run_uri, "probabilities": source, "images": int(len(flagged)),
               "flagged": int(flagged.sum()),
               "flagged_per_label": {n: int((flagged & (p["label"] == i)).sum()) for i, n in enumerate(names)},
               "cluster_outliers": int(s["cluster_outlier"].sum()),
               "expected_precision": None if np.isnan(s["expected_precision"]) else round(float(s["expected_precision"]), 4),
               "witness_weights": {str(n): round(float(w), 4) for n, w in zip(s["witness_names"], s["witness_weights"])},
               "cluster_cuts": {names[i]: round(float(s["cluster_cut"][np.flatnonzero(p["label"] == i)[0]]), 4)
                                for i in range(len(names)) if (p["label"] == i).any()
                                and np.isfinite(s["cluster_cut"][np.flatnonzero(p["label"] == i)[0]])},
               "clusters": int(s["cluster_id"].max() + 1) if len(s["cluster_id"]) else 0,
               "top": [{"uri": str(p["uri"][i]), "label": names[p["label"][i]], "suggested": names[s["suggested"][i]],
                        "score": round(float(s["score"][i]), 4), "reasons": reason_names(int(s["reasons"][i]))}
                       for i in np.argsort(-s["score"], kind="stable")[:20] if p["label"][i] >= 0],
               "options": {k: v for k, v in kw.items()}}
    storage.write_bytes(storage.join(out_uri, "suspects.json"), json.dumps(summary, indent=1).encode(),
                        "application/json")
    return summary
